"""``python -m research``: the same as ``kiosk-research``."""

import sys

from research.cli import main

sys.exit(main())
