"""Small networks, masks and images shared by the ``test_pins_*.py`` files (tests pinning what mutation testing
found unchecked)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import scatloss.masks as masks_module
from scatloss.adapters.aotgan import SCATDiscriminator
from scatloss.nets import UNetSegmenter

B, C, S = 2, 3, 16


def patch_d(c: int = 2) -> nn.Sequential:
    """A Sequential PatchGAN (no spectral norm): 16x16 -> 8 -> 4 -> 3 -> 2."""
    return nn.Sequential(
        nn.Conv2d(3, c, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c, 2 * c, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * c, 2 * c, 4, 1, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * c, 1, 2, 1, 0),
    )


def tiny_seg() -> UNetSegmenter:
    return UNetSegmenter(3, base_channels=2, depth=2)


def holes(b: int = B) -> torch.Tensor:
    m = torch.zeros(b, 1, S, S)
    for i in range(b):
        m[i, :, 2 + i : 9 + i, 3 : 10 + 2 * i] = 1.0
    return m


def aot_images(b: int = B, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, C, S, S, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def composite(real: torch.Tensor, masks: torch.Tensor, seed: int = 5) -> torch.Tensor:
    pred = torch.rand(real.shape, generator=torch.Generator().manual_seed(seed), dtype=real.dtype) * 2 - 1
    return masks * pred + (1 - masks) * real


def scat_d(**kwargs) -> SCATDiscriminator:
    torch.manual_seed(0)
    kwargs.setdefault("segmenter", tiny_seg())
    return SCATDiscriminator(patch_d(), hidden_features=4, out_features=3, **kwargs)


def smooth_images() -> torch.Tensor:
    """Three smooth ``(3, 16, 16)`` images in ``[-1, 1]`` (seed 0)."""
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(3, 3, 16, 16, generator=g), 3, stride=1, padding=1)
    return (smooth * 2 - 1).clamp(-1, 1)


def identity(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return corrupted


def channel_map(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1]


def stroke_reference(u: list[float], h: int, w: int, side: float, scale: float) -> tuple[np.ndarray, float]:
    """The documented stroke: a polyline from ``(u3 (h-1), u4 (w-1))``, heading ``2 pi u5``, ``1 + int(8 u2)``
    segments, each turning by ``(u[6+2k] - 1/2) pi`` and of length ``side max(scale, 1/4) (0.05 + 0.2 u[7+2k])``,
    vertices clipped to the image, drawn with a disc of radius ``max(1/2, side scale (0.03 + 0.12 u1) / 2)``: the
    pixels within that radius of the polyline. Returns the full mask and the smallest ``|d^2 - r^2|``."""
    radius = max(0.5, 0.5 * side * scale * (0.03 + 0.12 * u[1]))
    points = [(u[3] * (h - 1), u[4] * (w - 1))]
    heading = 2 * math.pi * u[5]
    for k in range(1 + int(u[2] * 8)):
        heading += (u[6 + 2 * k] - 0.5) * math.pi
        length = side * max(scale, 0.25) * (0.05 + 0.20 * u[7 + 2 * k])
        y, x = points[-1]
        points.append(
            (
                min(max(y + length * math.sin(heading), 0.0), h - 1.0),
                min(max(x + length * math.cos(heading), 0.0), w - 1.0),
            )
        )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    d2 = np.full((h, w), np.inf)
    for (ay, ax), (by, bx) in zip(points[:-1], points[1:], strict=True):
        dy, dx = by - ay, bx - ax
        t = np.clip(((yy - ay) * dy + (xx - ax) * dx) / (dy * dy + dx * dx), 0.0, 1.0)
        d2 = np.minimum(d2, (yy - ay - t * dy) ** 2 + (xx - ax - t * dx) ** 2)
    return d2 <= radius * radius, float(np.abs(d2 - radius * radius).min())


def full_shape(u: list[float], h: int, w: int, side: float, scale: float) -> np.ndarray:
    y0, y1, x0, x1, crop = masks_module._shape(u, h, w, side, scale)
    assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w and crop.shape == (y1 - y0, x1 - x0)
    full = np.zeros((h, w), dtype=bool)
    full[y0:y1, x0:x1] = crop
    return full
