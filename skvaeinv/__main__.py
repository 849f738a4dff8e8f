"""``python -m skvaeinv`` runs the command line."""

import sys

from skvaeinv.cli import run

sys.exit(run())
