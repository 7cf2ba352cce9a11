"""The thin PySide6 layer of the kiosk: windows, widgets and the two worker threads (capture, inference).

Everything it shows or decides comes from the Qt-free core (kiosk.io.sources, kiosk.vision.engine, kiosk.rules.decision,
kiosk.storage); this package only wires it to the screen.
"""
