"""The Siamese network of Koch, Zemel & Salakhutdinov (2015).

Twin encoders with tied weights (one module applied to both inputs), a learned weighted L1 distance
between the two feature vectors, and one sigmoid unit giving P(same). ``embed`` is separate from the
head so a reference's features are computed once at enrolment and a live frame costs one encoder pass.
"""

from __future__ import annotations

import torch
from torch import nn


class KochEncoder(nn.Module):
    """Koch et al.'s original encoder: 105x105 grey input; conv 64@10x10, 128@7x7, 128@4x4 (each with
    2x2 max-pool), 256@4x4, then a 4096-unit sigmoid layer. ``batch_norm`` (not in the paper) puts a
    BatchNorm after each convolution; False keeps the original layers (and state_dict keys) exactly."""

    def __init__(self, input_size: int = 105, channels: int = 1, feature_dim: int = 4096, width: float = 1.0,
                 batch_norm: bool = False):
        super().__init__()
        c = [max(8, int(round(n * width))) for n in (64, 128, 128, 256)]

        def stage(cin: int, cout: int, kernel: int, pool: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, bias=not batch_norm)]
            layers += [nn.BatchNorm2d(cout)] if batch_norm else []
            return layers + [nn.ReLU()] + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(*stage(channels, c[0], 10), *stage(c[0], c[1], 7), *stage(c[1], c[2], 4),
                                      *stage(c[2], c[3], 4, pool=False))
        self.features.eval()  # size probe: no BatchNorm statistics update, works on a 1x1 final map
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, input_size, input_size)).numel()
        self.features.train()
        self.fc = nn.Linear(flat, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(self.features(x), 1)))


def pretrained_face_encoder(source_sha256: str | None = None) -> nn.Module:
    """dlib's face-recognition ResNet from the installed package (128-d), checked against the file's
    SHA-256 recorded in the weights. Its parameters are never stored in our weights files."""
    from kiosk.vision.face_resnet import load_dlib_face_resnet  # noqa: PLC0415 (torch-only module, loaded on demand)

    encoder, sha = load_dlib_face_resnet(expected_sha256=source_sha256)
    encoder.source_sha256 = sha  # recorded in the weights file; another file is refused at load
    encoder.feature_dim = 128
    encoder.stored_externally = True
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)  # frozen: the head is what we train
    return encoder


ENCODERS = {"dlib_resnet": pretrained_face_encoder, "koch": KochEncoder}
HEADS = ("weighted_l1", "euclidean")


def build_encoder(name: str, **options) -> nn.Module:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](**options)


class SiameseNet(nn.Module):
    """P(same) = sigmoid(head(|f1 - f2|)), f = encoder(x) with ONE shared encoder (tied weights).

    Heads: ``weighted_l1`` is Koch et al.'s learned weighted L1 distance, sum_j alpha_j |f1_j - f2_j| + bias;
    ``euclidean`` is a*||f1 - f2|| + bias (dlib's own rule, made a probability by the same sigmoid).
    """

    def __init__(self, encoder_name: str = "koch", encoder_options: dict | None = None, head: str = "weighted_l1"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
        self.encoder_name = encoder_name
        self.encoder_options = dict(encoder_options or {})
        self.head = head
        self.encoder = build_encoder(encoder_name, **self.encoder_options)
        if hasattr(self.encoder, "source_sha256"):
            self.encoder_options["source_sha256"] = self.encoder.source_sha256
        inputs = self.encoder.feature_dim if head == "weighted_l1" else 1
        self.distance_weights = nn.Linear(inputs, 1)  # the alpha_j (or a) and the bias

    @property
    def encoder_stored_externally(self) -> bool:
        return bool(getattr(self.encoder, "stored_externally", False))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors for a batch of network inputs (N, C, H, W) -> (N, D)."""
        return self.encoder(x)

    def logit_from_features(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        difference = f1 - f2
        if self.head == "weighted_l1":
            return self.distance_weights(torch.abs(difference)).squeeze(-1)
        return self.distance_weights(torch.linalg.vector_norm(difference, dim=-1, keepdim=True)).squeeze(-1)

    def similarity(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """P(same) from two (batches of) feature vectors."""
        return torch.sigmoid(self.logit_from_features(f1, f2))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Logits for pairs; train with BCE-with-logits (= Koch's cross-entropy on the sigmoid unit)."""
        return self.logit_from_features(self.embed(x1), self.embed(x2))
