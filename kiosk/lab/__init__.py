"""Evaluation and training (the ``lab`` extra, with tqdm): datasets, metrics, protocols, calibration. The
product (kiosk.app, kiosk.qt) never imports it; the command line does, for its evaluate and train commands.

kiosk.vision is imported first: its settings for OpenCV and torch (the pixel limit, the OpenMP spin count) must
be in place before the modules here load either library.
"""

import kiosk.vision as _vision  # noqa: F401
