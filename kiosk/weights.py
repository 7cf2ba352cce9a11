"""Weights files: the model's tensors plus metadata, loaded safely and checked for integrity.

Format: a ``torch.save`` dict of plain tensors and JSON-like metadata, read back with
``torch.load(weights_only=True)`` (no pickled code runs). A SHA-256 over the tensors detects damage;
architecture and preprocessing version are checked against this code before any weight is used.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from .errors import NoTrainedWeightsError, WeightsError
from .model import ENCODERS, SiameseNet
from .preprocess import PREPROCESS_VERSION, InputSpec

FORMAT = "siamese-kiosk-weights"
FORMAT_VERSION = 1


def _digest(state: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        sha.update(key.encode())
        sha.update(str(tensor.dtype).encode())
        sha.update(str(tuple(tensor.shape)).encode())
        sha.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return sha.hexdigest()


def save_weights(path: str | Path, model: SiameseNet, spec: InputSpec, metadata: dict | None = None,
                 half: bool = True) -> Path:
    """Write model + metadata atomically (temp file then rename). ``half`` stores floats as float16."""
    path = Path(path)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        state[key] = tensor.half() if half and tensor.is_floating_point() else tensor
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"encoder": model.encoder_name, "options": model.encoder_options},
        "input_spec": spec.to_dict(),
        "metadata": metadata or {},
        "state_dict": state,
        "sha256": _digest(state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def read_payload(path: str | Path) -> dict:
    """Load and validate a weights file; every problem becomes a WeightsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise NoTrainedWeightsError(
            f"{path}: no trained weights installed (train with 'kiosk train' or restore weights/ from the repo)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for damaged files
        raise WeightsError(f"{path}: damaged or not a weights file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a Siamese Kiosk weights file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: weights format {payload.get('format_version')} is not supported "
                           f"(this version reads {FORMAT_VERSION})")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or _digest(state) != payload.get("sha256"):
        raise WeightsError(f"{path}: integrity check failed (the file is damaged or was modified)")
    arch = payload.get("architecture", {})
    if arch.get("encoder") not in ENCODERS:
        raise WeightsError(f"{path}: unknown encoder {arch.get('encoder')!r}")
    spec = payload.get("input_spec", {})
    if spec.get("version") != PREPROCESS_VERSION:
        raise WeightsError(f"{path}: made for preprocessing version {spec.get('version')}, "
                           f"this code uses {PREPROCESS_VERSION}; retrain or use matching weights")
    return payload


def load_weights(path: str | Path) -> tuple[SiameseNet, InputSpec, dict]:
    """(model in eval mode, its input spec, its metadata)."""
    payload = read_payload(path)
    arch = payload["architecture"]
    try:
        model = SiameseNet(arch["encoder"], arch.get("options") or {})
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    except (RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: weights do not match the {arch['encoder']!r} architecture "
                           f"({str(exc).splitlines()[0][:160]})") from None
    model.eval()
    return model, InputSpec.from_dict(payload["input_spec"]), payload.get("metadata", {})
