"""Small networks, masks and images shared by the ``test_pins_*.py`` files (tests pinning what mutation testing
found unchecked)."""

from __future__ import annotations

import torch
from torch import nn

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
