"""``python -m dbconf`` runs the ``dbconf`` command."""

import sys

from dbconf.cli import main

sys.exit(main())
