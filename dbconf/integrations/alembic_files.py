"""The files of a migration directory that ``dbconf migrations init NAME`` writes.

No ``alembic.ini``: dbconf builds Alembic's configuration from the profile
(:func:`dbconf.integrations.alembic.alembic_config`). The directory holds ``env.py`` (one call
to :func:`~dbconf.integrations.alembic.run_migrations`), ``script.py.mako`` (the template of new
revisions, as Alembic's ``generic`` one) and an empty ``versions/``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ENV_PY", "SCRIPT_MAKO", "write_directory"]

ENV_PY = '''\
"""Alembic environment of database {name}: dbconf connects (see dbconf.integrations.alembic)."""

from dbconf.integrations.alembic import run_migrations

run_migrations()  # autogenerate: run_migrations(target_metadata=myapp.models.Base.metadata)
'''

SCRIPT_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


def write_directory(path: Path, name: str) -> list[str]:
    """Write the migration directory of database ``name`` at ``path`` (which must not exist
    or be empty); return the names written."""
    (path / "versions").mkdir(parents=True, exist_ok=True)
    (path / "env.py").write_text(ENV_PY.format(name=name), encoding="utf-8")
    (path / "script.py.mako").write_text(SCRIPT_MAKO, encoding="utf-8")
    return ["env.py", "script.py.mako", "versions/"]
