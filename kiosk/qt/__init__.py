"""The thin PySide6 layer of the kiosk: windows, widgets and the two worker threads (capture, inference).

Everything it shows or decides comes from the application layer (kiosk.app) and the Qt-free core beneath it;
this package only wires it to the screen. kiosk.io is imported first: OpenCV's pixel limit must be set before
any page loads cv2.
"""

import kiosk.io  # noqa: F401
