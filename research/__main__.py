"""``python -m research``: the research command line (research/ is not installed with the kiosk)."""

import sys

from research.cli import main

sys.exit(main())
