"""``python -m skvaeinv`` runs the command line."""

import sys

from skvaeinv.cli import main

sys.exit(main())
