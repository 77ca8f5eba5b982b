"""Reference networks: the two-headed U-Net discriminator of the authors' release and a U-Net segmenter.

Both are spectral-normed throughout (paper, Implementation Details: "spectral normalization on all S and
D's layers") and use no in-place operation anywhere, so forward hooks (:mod:`scatloss.taps`) read the
intermediate outputs exactly as they were produced.

Layout of :class:`UNetDiscriminator` (``depth = 5``, ``base_channels = 64``, input ``(B, 3, H, W)``)::

    encoder.0  (B,   64, H/2,  W/2)  \\
    encoder.1  (B,  128, H/4,  W/4)   |  textural layers (default taps of the textural contrastive loss)
    encoder.2  (B,  256, H/8,  W/8)   |
    encoder.3  (B,  512, H/16, W/16) /
    encoder.4  (B, 1024, H/32, W/32)    bottleneck
      -> ReLU -> sum over (H, W) -> (B, 1024)   = "global_head:input" (semantic layer)
      -> global_head (SN Linear 1024 -> 1)     -> global logits (B, 1)
    decoder.0 .. decoder.3   upsample x2, concatenate the encoder skip, two SN 3x3 convs
    decoder.4                upsample x2 to (H, W), two SN 3x3 convs (no skip)
    pixel_head (SN 1x1 conv -> 1)              -> per-pixel logits (B, 1, H, W)

In the paper's figure D (global logit) and S (per-pixel segmentation logits) are two networks; the
released code merges them into this one U-Net with two heads. For the two-network layout, pair any
global discriminator with :class:`UNetSegmenter`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ._validation import check_float_tensor

__all__ = ["UNetDiscriminator", "UNetSegmenter"]

_SLOPE = 0.2


def _sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Orthogonal init (deterministic under ``torch.manual_seed``), zero bias, then optional spectral norm."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        nn.init.orthogonal_(weight)
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        nn.init.zeros_(bias)
    return _spectral_norm(module) if enabled else module


def _conv(cin: int, cout: int, kernel: int, sn: bool) -> nn.Module:
    return _sn(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), sn)


class _DownBlock(nn.Module):
    """Residual downsampling block: ``avgpool(LReLU(conv(LReLU(conv(x))))) + conv1x1(avgpool(x))``.

    ``(B, cin, H, W) -> (B, cout, H/2, W/2)``.
    """

    def __init__(self, cin: int, cout: int, sn: bool) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, sn)
        self.act1 = nn.LeakyReLU(_SLOPE)
        self.conv2 = _conv(cout, cout, 3, sn)
        self.act2 = nn.LeakyReLU(_SLOPE)
        self.pool = nn.AvgPool2d(2)
        self.shortcut = _conv(cin, cout, 1, sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return main + self.shortcut(self.pool(x))


class _UpBlock(nn.Module):
    """Nearest x2 upsampling, optional skip concatenation, two SN 3x3 convs with LeakyReLU.

    ``(B, cin, h, w)`` (+ skip ``(B, cskip, 2h, 2w)``) ``-> (B, cout, 2h, 2w)``.
    """

    def __init__(self, cin: int, cskip: int, cout: int, sn: bool) -> None:
        super().__init__()
        self.conv1 = _conv(cin + cskip, cout, 3, sn)
        self.act1 = nn.LeakyReLU(_SLOPE)
        self.conv2 = _conv(cout, cout, 3, sn)
        self.act2 = nn.LeakyReLU(_SLOPE)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.act2(self.conv2(self.act1(self.conv1(x))))


def _check_config(in_channels: int, base_channels: int, depth: int, max_channels: int) -> None:
    for name, value in (
        ("in_channels", in_channels),
        ("base_channels", base_channels),
        ("depth", depth),
        ("max_channels", max_channels),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value}")


def _check_input(x: torch.Tensor, in_channels: int, multiple: int, depth: int) -> None:
    check_float_tensor("x", x, ndim=4)
    if x.shape[1] != in_channels:
        raise ValueError(f"x: expected {in_channels} channels (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"x: expected height and width divisible by 2**depth = {multiple} (depth={depth}), "
            f"got shape {tuple(x.shape)}; pad or crop the input"
        )


class _UNet(nn.Module):
    """Shared encoder/decoder body; see :class:`UNetDiscriminator` and :class:`UNetSegmenter`."""

    def __init__(
        self, in_channels: int, base_channels: int, depth: int, max_channels: int, spectral_norm: bool, stem: bool
    ) -> None:
        super().__init__()
        _check_config(in_channels, base_channels, depth, max_channels)
        self.in_channels = in_channels
        self.depth = depth
        widths = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        self.encoder_channels: tuple[int, ...] = tuple(widths)
        # Optional full-resolution stem (segmenter): gives the last decoder stage a full-resolution skip.
        self.stem = (
            nn.Sequential(_conv(in_channels, base_channels, 3, spectral_norm), nn.LeakyReLU(_SLOPE)) if stem else None
        )
        cin = base_channels if stem else in_channels
        blocks = []
        for cout in widths:
            blocks.append(_DownBlock(cin, cout, spectral_norm))
            cin = cout
        self.encoder = nn.ModuleList(blocks)
        ups = []
        for j in range(depth):
            level = depth - 2 - j  # encoder block whose output has the resolution of this stage's output
            if level >= 0:
                cskip, cout = widths[level], widths[level]
            else:
                cskip, cout = (base_channels if stem else 0), base_channels
            ups.append(_UpBlock(cin, cskip, cout, spectral_norm))
            cin = cout
        self.decoder = nn.ModuleList(ups)
        self.pixel_head = _conv(cin, 1, 1, spectral_norm)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        s = self.stem(x) if self.stem is not None else None
        h = s if s is not None else x
        feats = []
        for block in self.encoder:
            h = block(h)
            feats.append(h)
        return feats, s

    def _decode(self, feats: list[torch.Tensor], stem_out: torch.Tensor | None) -> torch.Tensor:
        h = feats[-1]
        for j, block in enumerate(self.decoder):
            level = self.depth - 2 - j
            h = block(h, feats[level] if level >= 0 else stem_out)
        return self.pixel_head(h)


class UNetDiscriminator(_UNet):
    """Two-headed U-Net discriminator (the layout of the authors' released code).

    One network plays both D and S of the paper: a global real/fake logit from the bottleneck (global
    adversarial loss, Eq. 6) and a per-pixel logit map at input resolution from the decoder (SCAT, Eqs. 1-2).
    Its encoder features feed the contrastive losses (Eqs. 3-4).

    Args:
        in_channels: image channels ``C``.
        base_channels: width of ``encoder.0``; block ``i`` has ``min(base_channels * 2**i, max_channels)``.
        depth: number of downsampling encoder blocks (and of decoder stages). Inputs must have ``H`` and ``W``
            divisible by ``2**depth``.
        max_channels: channel cap.
        spectral_norm: wrap every conv and linear layer in ``torch.nn.utils.parametrizations.spectral_norm``.

    Shape:
        - Input ``x``: ``(B, C, H, W)`` with ``H, W`` divisible by ``2**depth``.
        - Output: ``(global_logits, pixel_logits)`` of shapes ``(B, 1)`` and ``(B, 1, H, W)`` (raw logits,
          no sigmoid).

    Tap names (``named_modules()``; the ``":input"`` suffix means the module's input rather than output):
        - ``encoder.0`` ... ``encoder.{depth-1}``: residual downsampling blocks; ``encoder.i`` outputs
          ``(B, C_i, H / 2**(i+1), W / 2**(i+1))``.
        - :attr:`textural_layers`: ``("encoder.0", "encoder.1", "encoder.2", "encoder.3")`` (the first
          ``min(4, depth)`` blocks), the shallow layers of the textural contrastive loss (Eq. 3).
        - :attr:`semantic_layer` = ``"global_head:input"``: the ReLU-sum-pooled bottleneck vector
          ``(B, C_{depth-1})`` (1024-d with the defaults), the feature of the semantic contrastive loss (Eq. 4).
        - ``global_head``: spectral-normed ``nn.Linear(C_{depth-1}, 1)``.
        - ``decoder.0`` ... ``decoder.{depth-1}``: upsampling stages; ``pixel_head``: final 1x1 conv.

    Example:
        >>> d = UNetDiscriminator(base_channels=8, depth=3, max_channels=32)
        >>> g, p = d(torch.randn(2, 3, 16, 16))
        >>> tuple(g.shape), tuple(p.shape)
        ((2, 1), (2, 1, 16, 16))
    """

    semantic_layer: ClassVar[str] = "global_head:input"

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 5,
        max_channels: int = 1024,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__(in_channels, base_channels, depth, max_channels, spectral_norm, stem=False)
        self.global_head = _sn(nn.Linear(self.encoder_channels[-1], 1), spectral_norm)
        self.textural_layers: tuple[str, ...] = self.textural_layer_names(depth)

    @staticmethod
    def textural_layer_names(depth: int = 5) -> tuple[str, ...]:
        """Default textural tap names for a given ``depth``, without building a network."""
        return tuple(f"encoder.{i}" for i in range(min(4, depth)))

    @property
    def feature_dim(self) -> int:
        """Width of the semantic vector (``"global_head:input"``)."""
        return self.encoder_channels[-1]

    def default_taps(self) -> dict[str, tuple[str, ...] | str]:
        """``{"textural": textural_layers, "semantic": semantic_layer}``, the taps the released code uses."""
        return {"textural": self.textural_layers, "semantic": self.semantic_layer}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W) -> ((B, 1) global logits, (B, 1, H, W) per-pixel logits)``."""
        _check_input(x, self.in_channels, 2**self.depth, self.depth)
        feats, _ = self._encode(x)
        pooled = torch.sum(F.relu(feats[-1]), dim=(2, 3))  # (B, C_bottleneck), sum-pool as in the release
        global_logits = self.global_head(pooled)
        pixel_logits = self._decode(feats, None)
        return global_logits, pixel_logits


class UNetSegmenter(_UNet):
    """Spectral-normed U-Net segmenter ``S`` (the paper's separate-networks layout, Fig. 2).

    Labels each pixel valid (logit > 0) or generated; trained with the SCAT loss (Eqs. 1-2).

    Args:
        in_channels: image channels ``C``.
        base_channels: width of the full-resolution ``stem`` and of ``encoder.0``; stage ``i`` has
            ``min(base_channels * 2**i, max_channels)`` channels.
        depth: number of downsampling blocks; ``H, W`` must be divisible by ``2**depth``.
        spectral_norm: wrap every conv in spectral norm.
        max_channels: channel cap (keyword only).

    Shape:
        - Input ``x``: ``(B, C, H, W)``.
        - Output: ``(B, 1, H, W)`` per-pixel logits (no sigmoid).

    Modules: ``stem`` (full-resolution conv), ``encoder.0 .. encoder.{depth-1}``,
    ``decoder.0 .. decoder.{depth-1}`` (the last one concatenates the stem output), ``pixel_head``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 32,
        depth: int = 4,
        spectral_norm: bool = True,
        *,
        max_channels: int = 512,
    ) -> None:
        super().__init__(in_channels, base_channels, depth, max_channels, spectral_norm, stem=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 1, H, W)`` per-pixel logits."""
        _check_input(x, self.in_channels, 2**self.depth, self.depth)
        feats, stem_out = self._encode(x)
        return self._decode(feats, stem_out)
