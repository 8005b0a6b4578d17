"""``python -m moprune`` runs the command line."""

import sys

from moprune.cli import main

sys.exit(main())
