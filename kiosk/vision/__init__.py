"""Faces in pictures: detection, alignment, the one preprocessing path, quality, the networks and their weights,
and liveness. Torch lives here (and in kiosk.lab), nowhere else."""
