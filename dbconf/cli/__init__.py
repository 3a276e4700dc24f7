"""The ``dbconf`` command (console script ``dbconf = "dbconf.cli:main"``, ``python -m dbconf``).

The parser and the commands are in :mod:`dbconf.cli.commands`; ``migrate``/``migrations`` in
:mod:`dbconf.cli.migrate`, ``shell`` in :mod:`dbconf.cli.shell` and
:mod:`dbconf.cli.shell_clients`, the JSON of ``check`` in :mod:`dbconf.cli.check_json` and its
connection budget in :mod:`dbconf.cli.budget`. The top layer: it may import everything, and
only the CLI imports these modules.
"""

from dbconf.cli.commands import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    build_parser,
    json_schema,
    main,
    masked_tree,
    package_version,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "build_parser",
    "json_schema",
    "main",
    "masked_tree",
    "package_version",
]
