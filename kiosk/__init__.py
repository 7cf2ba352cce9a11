"""Siamese Kiosk: offline one-shot face verification (Koch, Zemel & Salakhutdinov 2015).

The package is Qt-free except for ``kiosk.qt``; tests and the command line drive the core directly, and
programs use the public API in ``kiosk.api``.

Importing ``kiosk`` changes nothing in the process (no environment variable, no library loaded). The settings
OpenCV and torch read once, when they load, are set by the packages that load them, before they do:
``kiosk.io`` sets OpenCV's image pixel limit, ``kiosk.vision`` the OpenMP spin count.
"""

__version__ = "0.1.0"
