"""The FastAPI dependency through TestClient: commit on 200, rollback on HTTPException."""

# No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
# module's globals, and the ``MainSession`` alias below is local to the test.
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import cast

import pytest
import sqlalchemy as sa
from async_support import backends, wait_for
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dbconf.config import ProfileConfig
from dbconf.integrations.fastapi import SessionDep, lifespan
from dbconf.runtime.registry import Registry


@pytest.fixture
def table(pg_admin: sa.Engine) -> Iterator[str]:
    name = f"t_api_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    yield name
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")


def ids(admin: sa.Engine, table: str) -> list[int]:
    with admin.connect() as conn:
        return list(conn.exec_driver_sql(f"SELECT id FROM {table} ORDER BY id").scalars())


def test_dependency_commits_on_success_and_rolls_back_on_http_exception(
    pg_url: str, pg_admin: sa.Engine, table: str
) -> None:
    app_name = f"dbconf_api_{uuid.uuid4().hex[:8]}"
    dbs = Registry(
        ProfileConfig.model_validate(
            {
                "databases": {
                    "main": {
                        "url": pg_url,
                        "application_name": app_name,
                        "pool": {"size": 1, "max_overflow": 0, "timeout": 2},
                    }
                }
            }
        )
    )
    db = dbs["main"]
    app = FastAPI(lifespan=lifespan(dbs))
    MainSession = SessionDep(db)  # noqa: N806 (a type alias)

    @app.post("/items/{item}")
    def create(item: int, session: MainSession) -> dict[str, int]:  # type: ignore[valid-type]
        cast(Session, session).execute(sa.text(f"INSERT INTO {table} VALUES (:i)"), {"i": item})
        return {"id": item}

    @app.post("/fail/{item}")
    def fail(item: int, session: Session = Depends(db.dependency())) -> None:  # noqa: B008
        session.execute(sa.text(f"INSERT INTO {table} VALUES (:i)"), {"i": item})
        raise HTTPException(status_code=409, detail="no")

    with TestClient(app) as client:
        assert client.post("/items/1").status_code == 200
        assert client.post("/fail/2").status_code == 409
        assert client.post("/items/3").status_code == 200  # pool of 1: nothing leaked
        assert ids(pg_admin, table) == [1, 3]
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # the lifespan disposed the pool at shutdown; backends leave pg_stat_activity
    # asynchronously, so poll with a deadline
    assert wait_for(lambda: backends(pg_admin, app_name) == 0)


def test_a_failed_commit_is_an_error_response_not_a_200(
    pg_url: str, pg_admin: sa.Engine, table: str
) -> None:
    """The commit runs before the response is sent: a deferred constraint that fails at COMMIT
    gives the client a 500, and nothing is stored."""
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_u UNIQUE (id) "
            "DEFERRABLE INITIALLY DEFERRED"
        )
        conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
    dbs = Registry(ProfileConfig.model_validate({"databases": {"main": {"url": pg_url}}}))
    app = FastAPI(lifespan=lifespan(dbs))
    MainSession = SessionDep(dbs["main"])  # noqa: N806 (a type alias)

    @app.post("/twice/{item}")
    def twice(item: int, session: MainSession) -> dict[str, int]:  # type: ignore[valid-type]
        cast(Session, session).execute(
            sa.text(f"INSERT INTO {table} VALUES (:i), (:i)"), {"i": item}
        )
        return {"id": item}

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/twice/1").status_code == 500
        assert client.post("/items-missing").status_code == 404
    assert ids(pg_admin, table) == []


def test_importing_dbconf_does_not_import_fastapi() -> None:
    code = (
        "import sys, dbconf, dbconf.runtime.registry, dbconf.integrations; "
        "assert 'fastapi' not in sys.modules, 'fastapi imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
