"""Combining trained face models into one Siamese network with a parallel encoder.

Each member's encoder becomes a branch of one shared (tied) encoder; the features are concatenated and
the weighted-L1 head holds every member's weights, divided by the number of members, so the combined
logit is the mean of the members' logits. The result is an ordinary weights file; its threshold is then
calibrated on the validation pairs of the first member's training configuration.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WeightsError
from ..model import SiameseNet
from ..weights import load_weights
from .face import save_calibrated


def combine_models(members: list[SiameseNet]) -> SiameseNet:
    branches = [{"encoder": m.encoder_name, "options": m.encoder_options} for m in members]
    combined = SiameseNet("parallel", {"branches": branches})
    with torch.no_grad():
        for branch, member in zip(combined.encoder.branches, members):
            branch.load_state_dict(member.encoder.state_dict())
        combined.distance_weights.weight.copy_(torch.cat([m.distance_weights.weight for m in members], 1) / len(members))
        combined.distance_weights.bias.copy_(sum(m.distance_weights.bias for m in members) / len(members))
    return combined.eval()


def combine_weights(paths: list[Path], out_path: Path, flip_average: bool) -> dict:
    """Write the combination of these weights files to out_path, calibrated; returns its metadata."""
    if len(paths) < 2:
        raise WeightsError("combining needs at least two weights files")
    loaded = [load_weights(p) for p in paths]
    specs = {repr(spec) for _, spec, _ in loaded}
    if len(specs) != 1:
        raise WeightsError(f"the members were made for different inputs: {sorted(specs)}")
    model = combine_models([m for m, _, _ in loaded])
    metadata = {"training": loaded[0][2]["training"],
                "members": [{"file": Path(p).name, "training": meta["training"]} for p, (_, _, meta) in zip(paths, loaded)]}
    return save_calibrated(out_path, model, loaded[0][1], metadata, flip_average)
