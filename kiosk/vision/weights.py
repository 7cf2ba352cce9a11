"""Weights files: the model's tensors plus metadata, loaded safely and checked for integrity.

Format: a ``torch.save`` dict of plain tensors and JSON-like metadata, read back with
``torch.load(weights_only=True)`` (no pickled code runs). A SHA-256 over the tensors AND the architecture,
input spec and metadata (the threshold included) detects damage and tampering; metadata values are
range-checked, and architecture and preprocessing version are checked against this code before any weight
is used. A pretrained encoder (dlib's face ResNet) is not stored: the file records its source's SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import torch

from kiosk.errors import NoTrainedWeightsError, WeightsError
from kiosk.io.files import atomic_write_bytes
from kiosk.io.pins import read_model_file
from kiosk.rules.decision import THRESHOLD_RANGE
from kiosk.vision.model import ENCODERS, HEADS, SiameseNet
from kiosk.vision.preprocess import PREPROCESS_VERSION, InputSpec

FORMAT = "siamese-kiosk-weights"
FORMAT_VERSION = 2

# The preprocessing each encoder was made for: face encoders take THE aligned face chip
# (kiosk.vision.preprocess); the Omniglot encoder takes drawings, prepared by research.omniglot.
INPUT_VERSIONS = {"dlib_resnet": PREPROCESS_VERSION, "koch": 1}
FACE_ENCODERS = {"dlib_resnet"}  # verification models: a threshold is required


def _digest(state: dict[str, torch.Tensor], described: dict | None = None) -> str:
    """SHA-256 over the tensors and (canonical JSON of) everything that describes them."""
    sha = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        sha.update(key.encode())
        sha.update(str(tensor.dtype).encode())
        sha.update(str(tuple(tensor.shape)).encode())
        sha.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    if described is not None:
        sha.update(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    return sha.hexdigest()


def _described(payload: dict) -> dict:
    return {key: payload.get(key) for key in ("architecture", "input_spec", "metadata")}


def _check_metadata(path: Path, metadata, verifies: bool) -> None:
    """Values that decide who gets in must be sane even in a file whose digest matches. ``verifies``: a
    face-verification model, which must carry its threshold (the Omniglot model classifies by arg-max)."""
    if not isinstance(metadata, dict):
        raise WeightsError(f"{path}: metadata is not a mapping")
    threshold = metadata.get("threshold")
    if verifies or threshold is not None:
        number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
        low, high = THRESHOLD_RANGE
        if not number or not math.isfinite(threshold) or not low <= threshold <= high:
            raise WeightsError(f"{path}: the decision threshold {threshold!r} is outside {low}-{high}")
    if not isinstance(metadata.get("flip_average", False), bool):
        raise WeightsError(f"{path}: flip_average must be true or false")


def save_weights(path: str | Path, model: SiameseNet, spec: InputSpec, metadata: dict | None = None,
                 half: bool = True) -> Path:
    """Write model + metadata atomically (temp file then rename). ``half`` stores floats as float16.
    An externally stored encoder (the pretrained face ResNet) is left out; its source SHA-256 is kept in
    the architecture options."""
    path = Path(path)
    state = {}
    for key, tensor in model.state_dict().items():
        if model.encoder_stored_externally and key.startswith("encoder."):
            continue
        tensor = tensor.detach().cpu()
        state[key] = tensor.half() if half and tensor.is_floating_point() else tensor
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": {"encoder": model.encoder_name, "options": model.encoder_options, "head": model.head},
        "input_spec": spec.to_dict(),
        "metadata": metadata or {},
        "state_dict": state,
    }
    _check_metadata(path, payload["metadata"], model.encoder_name in FACE_ENCODERS)
    payload["sha256"] = _digest(state, _described(payload))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buffer.getvalue(), mode=0o644)  # a model, not personal data: readable


def read_payload(path: str | Path) -> dict:
    """Load and validate a weights file; every problem becomes a WeightsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise NoTrainedWeightsError(
            f"{path}: no trained weights installed (train with 'kiosk train' or restore weights/ from the repo)")
    try:
        payload = torch.load(io.BytesIO(read_model_file(path)), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # torch raises many kinds for damaged files
        raise WeightsError(f"{path}: damaged or not a weights file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a Siamese Kiosk weights file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: weights format {payload.get('format_version')} is not supported "
                           f"(this version reads {FORMAT_VERSION})")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()) \
            or _digest(state, _described(payload)) != payload.get("sha256"):
        raise WeightsError(f"{path}: integrity check failed (the file is damaged or was modified)")
    arch = payload.get("architecture")
    if not isinstance(arch, dict) or arch.get("encoder") not in ENCODERS:
        raise WeightsError(f"{path}: unknown encoder {arch.get('encoder') if isinstance(arch, dict) else arch!r}")
    if arch["encoder"] == "dlib_resnet" and not isinstance((arch.get("options") or {}).get("source_sha256"), str):
        raise WeightsError(f"{path}: does not record which pretrained encoder file it was made for")
    if arch.get("head", "weighted_l1") not in HEADS:
        raise WeightsError(f"{path}: unknown head {arch.get('head')!r}")
    _check_metadata(path, payload.get("metadata"), arch["encoder"] in FACE_ENCODERS)
    spec = payload.get("input_spec")
    if not isinstance(spec, dict) or spec.get("version") != INPUT_VERSIONS[arch["encoder"]]:
        version = spec.get("version") if isinstance(spec, dict) else None
        raise WeightsError(f"{path}: made for preprocessing version {version}, this code uses "
                           f"{INPUT_VERSIONS[arch['encoder']]}; retrain or use matching weights")
    return payload


def load_weights(path: str | Path) -> tuple[SiameseNet, InputSpec, dict]:
    """(model in eval mode, its input spec, its metadata)."""
    payload = read_payload(path)
    arch = payload["architecture"]
    try:
        model = SiameseNet(arch["encoder"], arch.get("options") or {}, arch.get("head", "weighted_l1"))
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if model.encoder_stored_externally:
            missing = [key for key in missing if not key.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    except (RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: weights do not match the {arch['encoder']!r} architecture "
                           f"({str(exc).splitlines()[0][:160]})") from None
    model.eval()
    return model, InputSpec.from_dict(payload["input_spec"]), payload.get("metadata", {})
