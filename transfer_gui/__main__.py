"""``python -m transfer_gui``: the command line."""

import sys

from .cli import main

sys.exit(main())
