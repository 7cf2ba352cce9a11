"""The Siamese network of Koch, Zemel & Salakhutdinov (2015).

Twin encoders with tied weights (one module applied to both inputs), a learned weighted L1 distance
between the two feature vectors, and one sigmoid unit giving P(same). ``embed`` is separate from the
head so a reference's features are computed once at enrolment and a live frame costs one encoder pass.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class CompactFaceEncoder(nn.Module):
    """A small residual CNN for 64x64 face crops (the default): 4 stages, stride 2 each, then a linear
    projection of the flattened 4x4 map (keeping where features are, which matters for faces)."""

    def __init__(self, input_size: int = 64, channels: int = 3, widths=(32, 64, 96, 160), feature_dim: int = 128,
                 blocks_per_stage: int = 1, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [_down(channels, widths[0])]
        for i, width in enumerate(widths):
            if i:
                layers.append(_down(widths[i - 1], width))
            layers += [ResidualBlock(width) for _ in range(blocks_per_stage)]
        self.features = nn.Sequential(*layers)
        spatial = input_size // 2 ** len(widths)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(widths[-1] * spatial * spatial, feature_dim)
        self.norm = nn.BatchNorm1d(feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x):
        return self.norm(self.project(self.dropout(torch.flatten(self.features(x), 1))))


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


class ParallelEncoder(nn.Module):
    """Several encoders side by side on the same input, their features concatenated: still ONE encoder
    shared by both twins. ``branches``: [{"encoder": name, "options": {...}}, ...]."""

    def __init__(self, branches: list[dict], input_size: int | None = None):
        super().__init__()
        if not branches:
            raise ValueError("a parallel encoder needs at least one branch")
        sized = {"input_size": input_size} if input_size else {}
        self.branches = nn.ModuleList(build_encoder(b["encoder"], **{**(b.get("options") or {}), **sized})
                                      for b in branches)
        self.feature_dim = sum(branch.feature_dim for branch in self.branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


ENCODERS = {"compact": CompactFaceEncoder, "koch": KochEncoder, "parallel": ParallelEncoder}


def build_encoder(name: str, **options) -> nn.Module:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODERS)}")
    return ENCODERS[name](**options)


class SiameseNet(nn.Module):
    """P(same) = sigmoid(sum_j alpha_j |f1_j - f2_j| + bias), f = encoder(x) with ONE shared encoder."""

    def __init__(self, encoder_name: str = "compact", encoder_options: dict | None = None):
        super().__init__()
        self.encoder_name = encoder_name
        self.encoder_options = dict(encoder_options or {})
        self.encoder = build_encoder(encoder_name, **self.encoder_options)
        self.distance_weights = nn.Linear(self.encoder.feature_dim, 1)  # the alpha_j and the bias

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors for a batch of preprocessed crops (N, C, H, W) -> (N, D)."""
        return self.encoder(x)

    def logit_from_features(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return self.distance_weights(torch.abs(f1 - f2)).squeeze(-1)

    def similarity(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """P(same) from two (batches of) feature vectors."""
        return torch.sigmoid(self.logit_from_features(f1, f2))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Logits for pairs; train with BCE-with-logits (= Koch's cross-entropy on the sigmoid unit)."""
        return self.logit_from_features(self.embed(x1), self.embed(x2))
