"""Siamese Kiosk: python main.py [--source 0|video|folder] [--fullscreen] [--weights PATH]"""

import sys

from kiosk.qt.app import main

if __name__ == "__main__":
    sys.exit(main())
