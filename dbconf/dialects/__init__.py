"""Per-backend knowledge, one module per dialect (see :mod:`dbconf.dialects.base`).

Importing the package registers every dialect; ask :func:`dialect_for` by backend name.
"""

from dbconf.dialects import mysql, postgresql, sqlite
from dbconf.dialects.base import Dialect, dialect_for

__all__ = ["DIALECTS", "Dialect", "dialect_for"]

# Every dialect, in the order dbconf lists them (hints, error messages).
DIALECTS = (postgresql.dialect, mysql.dialect, sqlite.dialect)
