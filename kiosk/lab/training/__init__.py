"""Training the face model's head and the liveness detector. Not imported at kiosk run time."""
