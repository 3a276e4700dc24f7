"""The exception tree: every dbconf exception survives pickling (multiprocessing, Celery)."""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from hypothesis import given
from hypothesis import strategies as st

import dbconf
from dbconf import errors
from dbconf.config import ProfileConfig
from dbconf.errors import DbconfError
from dbconf.runtime.registry import Registry


def _subclasses(cls: type[Any]) -> Iterator[type[Any]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# Every exception class of dbconf, found by looking (dbconf.errors, and subclasses of
# DbconfError in any dbconf module), so a new class is covered at once. The variants that
# _WrappedDbapiError makes on demand are covered through their base class below.
for _module in pkgutil.walk_packages(dbconf.__path__, "dbconf."):
    if not _module.name.endswith(".__main__"):  # (that one runs the CLI)
        importlib.import_module(_module.name)
ALL_CLASSES = sorted(
    {cls for cls in vars(errors).values() if inspect.isclass(cls) and issubclass(cls, DbconfError)}
    | {cls for cls in _subclasses(DbconfError) if "_wraps" not in vars(cls)},
    key=lambda cls: cls.__qualname__,
)
WRAPPED = [cls for cls in ALL_CLASSES if issubclass(cls, errors._WrappedDbapiError)]
PLAIN = [cls for cls in ALL_CLASSES if cls not in WRAPPED]
# the SQLAlchemy classes a wrapped error can stand for (each gets its own variant class)
DBAPI_CLASSES = [
    sa_exc.OperationalError,
    sa_exc.InternalError,
    sa_exc.ProgrammingError,
    sa_exc.IntegrityError,
    sa_exc.DataError,
    sa_exc.NotSupportedError,
    sa_exc.DatabaseError,
    sa_exc.DBAPIError,
]

text = st.text(max_size=30)


def round_trip(error: BaseException) -> Any:
    return pickle.loads(pickle.dumps(error))


def state(error: BaseException) -> str:
    """What must survive the round trip (repr: NaN timeouts compare equal too)."""
    return repr((type(error).__qualname__, error.args, str(error), sorted(vars(error).items())))


def test_every_exception_class_is_exercised() -> None:
    assert {"ConfigError", "UnknownDatabaseError", "PoolExhaustedError"} <= {
        cls.__name__ for cls in PLAIN
    }
    wrapped = {"DisconnectError", "StatementTimeoutError", "LockTimeoutError"}
    assert wrapped <= {cls.__name__ for cls in WRAPPED}
    exported = {name for name in dbconf.__all__ if name.endswith("Error")}
    assert exported <= {cls.__name__ for cls in ALL_CLASSES}


@pytest.mark.parametrize("cls", PLAIN, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_plain_errors_round_trip(cls: type[DbconfError], data: st.DataObject) -> None:
    # arguments generated from the __init__ signature, whatever it is
    error = data.draw(st.builds(cls))
    copy = round_trip(error)
    assert type(copy) is cls
    assert state(copy) == state(error)


@given(problems=st.lists(st.builds(errors.Problem, text, text, text), min_size=1, max_size=4))
def test_config_error_keeps_its_problems_and_header(problems: list[errors.Problem]) -> None:
    error = errors.ConfigError(problems)
    copy = round_trip(error)
    assert copy.problems == tuple(problems)
    assert str(copy) == str(error)
    assert str(copy).count("invalid database configuration") == 1


@pytest.mark.parametrize("wrapped", DBAPI_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("cls", WRAPPED, ids=lambda cls: cls.__name__)
@given(
    statement=st.none() | text,
    message=text,
    database=text,
    hide=st.booleans(),
    invalidated=st.booleans(),
)
def test_wrapped_dbapi_errors_round_trip(
    cls: type[errors._WrappedDbapiError],
    wrapped: type[sa_exc.DBAPIError],
    statement: str | None,
    message: str,
    database: str,
    hide: bool,
    invalidated: bool,
) -> None:
    orig = sqlite3.OperationalError("driver says no")
    original = wrapped(statement, {"x": 1}, orig, hide_parameters=hide)
    original.connection_invalidated = invalidated
    error = cls.wrapping(original, message, database)
    copy = round_trip(error)
    assert type(copy) is type(error)
    assert isinstance(copy, cls)
    assert isinstance(copy, wrapped)
    assert str(copy) == str(error)
    assert (copy.statement, copy.params, copy.hide_parameters) == (statement, {"x": 1}, hide)
    assert copy.connection_invalidated == invalidated
    assert (copy.database, copy.dbconf_message) == (database, message)
    assert type(copy.orig) is sqlite3.OperationalError
    assert str(copy.orig) == "driver says no"


# --- a real multiprocessing.Pool ------------------------------------------------------------


def _look_up_undeclared(name: str) -> None:
    config = ProfileConfig.model_validate({"databases": {"primary": {"url": "sqlite://"}}})
    Registry(config, profile="test")[name]


def _fail_a_statement(_: int) -> None:
    config = ProfileConfig.model_validate(
        {"databases": {"primary": {"url": "sqlite://", "timeouts": {"statement": "1ms"}}}}
    )
    with Registry(config, profile="test") as dbs, dbs["primary"].session() as s:
        s.execute(
            sa.text(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c"
            )
        )


def test_errors_raised_in_a_pool_worker_reach_the_parent() -> None:
    """Unpicklable exceptions kill the pool's result thread and hang ``get()`` forever."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        unknown = pool.apply_async(_look_up_undeclared, ("primray",))
        with pytest.raises(dbconf.UnknownDatabaseError) as err:
            unknown.get(timeout=60)  # a guard against the hang, not a timing assertion
        assert "did you mean 'primary'?" in str(err.value)
        assert err.value.name == "primray"
        timed_out = pool.apply_async(_fail_a_statement, (0,))
        with pytest.raises(dbconf.StatementTimeoutError) as err2:
            timed_out.get(timeout=60)
        assert isinstance(err2.value, sa_exc.OperationalError)
        assert err2.value.database == "primary"
