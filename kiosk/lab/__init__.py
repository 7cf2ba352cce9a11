"""Evaluation and training (the ``lab`` extra, with tqdm): datasets, metrics, protocols, calibration. The
product (kiosk.app, kiosk.qt) never imports it; the command line does, for its evaluate and train commands."""
