"""A compact AOT-GAN-style generator and its SN-PatchGAN discriminator.

Written from the description in Zeng et al., "Aggregated Contextual Transformations for High-Resolution
Image Inpainting" (IEEE TVCG 2022), the generator family the SCAT paper builds on ("a few downsampling and
upsampling layers with several AOT-blocks in-between"). Sizes are configurable so that CPU training at
64x64 is fast (e.g. ``base_channels=16, num_blocks=2``).

Conventions: images in ``[-1, 1]``, hole masks ``(B, 1, H, W)`` with 1 = missing; the generator's input
image has its holes filled with 1.0 (white), as in AOT-GAN's and SCAT's trainers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from scatloss._validation import check_float_tensor, check_hole

__all__ = ["AOTBlock", "AOTGenerator", "PatchDiscriminator"]


def _check_positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def _standardise(feat: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-sample, per-channel standardisation over ``(H, W)`` (the "layer-norm-like" gate normalisation)."""
    mean = feat.mean(dim=(2, 3), keepdim=True)
    std = feat.std(dim=(2, 3), keepdim=True) if feat.shape[-2] * feat.shape[-1] > 1 else torch.ones_like(mean)
    return (feat - mean) / (std + eps)


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflection padding as in AOT-GAN; replicate padding where the map is too small to reflect ``p`` pixels."""
    mode = "reflect" if p < min(x.shape[-2], x.shape[-1]) else "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


class AOTBlock(nn.Module):
    """Aggregated contextual transformation block.

    ``x -> concat_r ReLU(conv3x3_dilation=r(x))`` (one branch of ``dim / len(rates)`` channels per rate)
    ``-> fuse conv3x3 -> out``; gated residual ``x * (1 - g) + out * g`` with
    ``g = sigmoid(gate_scale * standardise(conv3x3(x)))`` (spatial standardisation per sample and channel).

    Convolutions pad by reflection (replicate padding on maps too small to reflect, so any size works).

    Shape: ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, rates: tuple[int, ...] = (1, 2, 4, 8), gate_scale: float = 5.0) -> None:
        super().__init__()
        _check_positive("dim", dim)
        if len(rates) == 0 or any(not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f"rates: expected a non-empty tuple of positive ints, got {rates!r}")
        if dim % len(rates):
            raise ValueError(f"rates: expected len(rates) to divide the channel count {dim}, got {len(rates)} rates")
        branch = dim // len(rates)
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(nn.Conv2d(dim, branch, 3, dilation=r) for r in rates)
        self.fuse = nn.Conv2d(dim, dim, 3)
        self.gate = nn.Conv2d(dim, dim, 3)
        self.gate_scale = gate_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat(
            [torch.relu(conv(_pad(x, r))) for conv, r in zip(self.branches, self.rates, strict=True)], dim=1
        )
        out = self.fuse(_pad(out, 1))
        g = torch.sigmoid(self.gate_scale * _standardise(self.gate(_pad(x, 1))))
        return x * (1.0 - g) + out * g


class AOTGenerator(nn.Module):
    """AOT-GAN-style inpainting generator.

    conv7x7 -> two stride-2 convs (``base -> 2 base -> 4 base`` channels, ReLU) -> ``num_blocks``
    :class:`AOTBlock` at 1/4 resolution -> two (bilinear x2 + conv3x3 + ReLU) stages -> conv3x3 -> tanh.

    Args:
        in_channels: channels of the concatenated input (image channels + 1 for the hole mask).
        base_channels: width after the first conv; the AOT blocks run at ``4 * base_channels``.
        num_blocks: number of AOT blocks.
        rates: dilation rates of the AOT branches; ``len(rates)`` must divide ``4 * base_channels``.

    Shape:
        - ``corrupted``: ``(B, in_channels - 1, H, W)`` in ``[-1, 1]`` with holes already filled with 1.0,
          ``H, W`` divisible by 4.
        - ``hole``: ``(B, 1, H, W)``, 1 = missing.
        - Output: ``(B, in_channels - 1, H, W)`` in ``[-1, 1]`` (raw prediction ``x^``; composite it yourself).
    """

    def __init__(
        self, in_channels: int = 4, base_channels: int = 64, num_blocks: int = 8, rates: tuple[int, ...] = (1, 2, 4, 8)
    ) -> None:
        super().__init__()
        _check_positive("base_channels", base_channels)
        if _check_positive("in_channels", in_channels) < 2:
            raise ValueError(f"in_channels: expected image channels + 1 (mask), at least 2, got {in_channels}")
        if not isinstance(num_blocks, int) or isinstance(num_blocks, bool) or num_blocks < 0:
            raise ValueError(f"num_blocks: expected a non-negative int, got {num_blocks!r}")
        self.in_channels = in_channels
        c = base_channels
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, c, 7),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1),
            nn.ReLU(),
        )
        self.middle = nn.Sequential(*(AOTBlock(4 * c, tuple(rates)) for _ in range(num_blocks)))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(4 * c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * c, c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, in_channels - 1, 3, padding=1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` corrupted image + ``(B, 1, H, W)`` hole mask -> ``(B, C, H, W)`` prediction."""
        check_float_tensor("corrupted", corrupted, ndim=4)
        if corrupted.shape[1] != self.in_channels - 1:
            raise ValueError(
                f"corrupted: expected {self.in_channels - 1} channels (in_channels - 1), got shape "
                f"{tuple(corrupted.shape)}"
            )
        if corrupted.shape[-2] % 4 or corrupted.shape[-1] % 4:
            raise ValueError(f"corrupted: expected height and width divisible by 4, got shape {tuple(corrupted.shape)}")
        check_hole(hole, batch=corrupted.shape[0])
        if hole.shape[-2:] != corrupted.shape[-2:]:
            raise ValueError(
                f"hole: expected the spatial size {tuple(corrupted.shape[-2:])} of corrupted, got shape "
                f"{tuple(hole.shape)}"
            )
        x = torch.cat([corrupted, hole.to(corrupted.dtype)], dim=1)
        return torch.tanh(self.decoder(self.middle(self.encoder(x))))


class _SamePadConv(nn.Module):
    """A stride-1 4x4 conv with "same" zero padding (1 before, 2 after), so the size is kept exactly."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (1, 2, 1, 2)))


class PatchDiscriminator(nn.Module):
    """AOT-GAN's SN-PatchGAN discriminator.

    Four spectral-normed 4x4 convs (strides 2, 2, 2, 1; channels ``base, 2 base, 4 base, 8 base``), each
    followed by ``nn.LeakyReLU(0.2, inplace=True)`` as in AOT-GAN, then a spectral-normed 4x4 conv to one
    channel. Module names: ``conv.0`` (conv), ``conv.1`` (its in-place LeakyReLU), ..., ``conv.8`` (final conv);
    the stride-1 convs ``conv.6`` and ``conv.8`` wrap their ``nn.Conv2d`` as ``conv.6.conv`` / ``conv.8.conv``.
    Because the activations are in place, a tensor kept from a forward hook on a conv (``conv.0``, ...) is
    overwritten by the following LeakyReLU (and backpropagating through it fails autograd's version check);
    clone it in the hook, or tap the activation modules (``conv.1``, ``conv.3``, ...) instead.

    The stride-1 convs pad "same" (1 before, 2 after), so the logit map is exactly ``(H/8, W/8)``.
    (AOT-GAN pads them by 1, giving ``H/8 - 2``, and its trainer upsamples the map to the mask size anyway.)

    Shape:
        - Input: ``(B, in_channels, H, W)`` with ``H, W`` divisible by 8.
        - Output: ``(B, 1, H/8, W/8)`` logits.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        c = _check_positive("base_channels", base_channels)
        self.in_channels = in_channels

        def sn_conv(cin: int, cout: int, stride: int) -> nn.Module:
            conv = nn.Conv2d(cin, cout, 4, stride=stride, padding=1 if stride == 2 else 0, bias=False)
            nn.init.normal_(conv.weight, 0.0, 0.02)
            return spectral_norm(conv) if stride == 2 else _SamePadConv(spectral_norm(conv))

        self.conv = nn.Sequential(
            sn_conv(in_channels, c, 2),
            nn.LeakyReLU(0.2, inplace=True),
            sn_conv(c, 2 * c, 2),
            nn.LeakyReLU(0.2, inplace=True),
            sn_conv(2 * c, 4 * c, 2),
            nn.LeakyReLU(0.2, inplace=True),
            sn_conv(4 * c, 8 * c, 1),
            nn.LeakyReLU(0.2, inplace=True),
            sn_conv(8 * c, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H/8, W/8)`` patch logits."""
        check_float_tensor("x", x, ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} channels, got shape {tuple(x.shape)}")
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"x: expected height and width divisible by 8, got shape {tuple(x.shape)}")
        return self.conv(x)
