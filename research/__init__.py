"""Research beside the kiosk, never part of it: the reproduction of Koch, Zemel & Salakhutdinov (2015)'s
Omniglot one-shot experiment (``research.omniglot``, docs/OMNIGLOT.md), the analysis of its two test
protocols (``research.protocol_gap``) and the choice of the face detector that feeds the landmark model
(``research.choose_detector``, weights/MODEL_CARD.md).

It uses the product's own model code (``kiosk.vision.model.SiameseNet`` with the "koch" encoder, ``kiosk.vision.weights``)
so that the paper's experiment tests the code the kiosk runs. ``research`` may import ``kiosk``; ``kiosk``
never imports ``research``. Command line: ``python -m research`` (from the checkout).
"""

from __future__ import annotations

from kiosk.paths import WEIGHTS_DIR

# The committed Omniglot weights, in the kiosk's weights folder (every weights file lives under weights/).
OMNIGLOT_WEIGHTS = WEIGHTS_DIR / "characters_siamese.pt"  # Koch et al.'s one-shot experiment (docs/OMNIGLOT.md)
