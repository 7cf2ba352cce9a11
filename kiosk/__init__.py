"""Siamese Kiosk: offline one-shot face verification (Koch, Zemel & Salakhutdinov 2015).

The package is Qt-free except for ``kiosk.qt``; tests and the command line drive the core directly.
"""

__version__ = "0.1.0"
