"""The template's pre-start check, the other way round: the YAML reads the app's Settings.

``dbconf.load(settings=...)`` lets ``${POSTGRES_SERVER}`` (and every other ``${VAR}``) read the
fields of the settings object and its ``../.env``; the profile is chosen as always
(``DBCONF_PROFILE``, else ``default_profile: ${ENVIRONMENT:-local}``). Run from ``backend/``:
``python -m app.backend_pre_start``; exit 1 when a database is unreachable.
"""

import sys

import dbconf
from app.core.config import get_settings


def main() -> int:
    settings = get_settings()
    with dbconf.load(settings=settings) as dbs:
        host = dbs.origins.get(("databases", "primary", "host"))
        print(f"profile {dbs.profile}; primary host from {host}")
        reports = dbs.check()
        for report in reports:
            print(report.render())
        return 0 if all(report.ok for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
