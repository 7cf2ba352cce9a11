"""The application layer: every use case of the kiosk and its audit entry, between the core and its clients
(the Qt window, the command line, the public API)."""
