"""``python -m dbconf.cli`` runs the ``dbconf`` command, as it did when the CLI was one module."""

import sys

from dbconf.cli import main

sys.exit(main())
