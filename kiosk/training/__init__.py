"""Training the Siamese face model (and the Omniglot preset). Not imported at kiosk run time."""
