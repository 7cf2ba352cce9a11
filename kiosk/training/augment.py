"""Webcam-like augmentation applied batch-wise to uint8 face crops (after THE preprocessing's crop)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..preprocess import to_network_input


def jpeg_roundtrip(crops: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Re-encode some crops as JPEG at low quality (compression artefacts of cheap webcams)."""
    out = crops.copy()
    for i in np.nonzero(rng.random(len(crops)) < prob)[0]:
        quality = int(rng.integers(20, 70))
        ok, data = cv2.imencode(".jpg", crops[i], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            out[i] = decoded.reshape(crops[i].shape)
    return out


def augmented_views(crops: np.ndarray, n_views: int, seed: int, strength: float = 1.0) -> np.ndarray:
    """(V, N, H, W, C) uint8: ``n_views`` copies of each crop through the training augmentation (JPEG
    re-encoding, then augment_batch), fixed by ``seed``; for measuring what the augmentation does."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    views = np.zeros((n_views,) + crops.shape, np.uint8)
    for v in range(n_views):
        for start in range(0, len(crops), 512):
            chunk = jpeg_roundtrip(crops[start:start + 512], rng, 0.2 * strength)
            x = augment_batch(torch.from_numpy(to_network_input(chunk)), generator, strength)
            views[v, start:start + 512] = ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255)
    return views


def augment_batch(x: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """x: float (N,C,H,W) in [-1,1] (network input). Flip, affine jitter, photometric jitter, blur, noise,
    low resolution. Everything stays in the network's input range."""
    n, c, h, w = x.shape

    def uniform(lo, hi, size=(n,)):
        return lo + (hi - lo) * torch.rand(size, generator=generator)

    # Geometry: rotation, scale, shift and flip in one affine resampling (border pixels replicated).
    angle = uniform(-12, 12) * strength * math.pi / 180
    scale = 1 + uniform(-0.1, 0.1) * strength
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-0.08, 0.08) * strength, uniform(-0.08, 0.08) * strength
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Low resolution for some: down to 20-40 px and back up (far or cheap cameras).
    low = torch.rand(n, generator=generator) < 0.25 * strength
    if low.any():
        side = int(torch.randint(20, 41, (1,), generator=generator))
        small = F.interpolate(x[low], size=(side, side), mode="area")
        x[low] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    # Blur for some (focus, motion).
    blur = torch.rand(n, generator=generator) < 0.2 * strength
    if blur.any():
        sigma = float(uniform(0.6, 1.4, (1,)))
        radius = 2
        k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
        xb = F.pad(x[blur], (radius, radius, radius, radius), mode="replicate")
        xb = F.conv2d(xb, k, groups=c)
        x[blur] = F.conv2d(xb, k.transpose(2, 3), groups=c)

    # Photometric: brightness, contrast, colour cast, sometimes grey.
    x = (x + 1) / 2
    brightness = uniform(-0.15, 0.15).view(n, 1, 1, 1) * strength
    contrast = (1 + uniform(-0.3, 0.3) * strength).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    if c == 3:
        cast = 1 + uniform(-0.08, 0.08, (n, 3)).view(n, 3, 1, 1) * strength
        x = x * cast
        grey = torch.rand(n, generator=generator) < 0.1 * strength
        x[grey] = x[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    gamma = torch.exp(uniform(-0.25, 0.25) * strength).view(n, 1, 1, 1)
    x = x.clamp(1e-4, 1) ** gamma
    # Sensor noise.
    x = x + torch.randn(x.shape, generator=generator) * uniform(0, 0.03).view(n, 1, 1, 1) * strength
    return (x.clamp(0, 1) * 2 - 1).contiguous()
