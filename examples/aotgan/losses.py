"""AOT-GAN's soft-mask PatchGAN loss ("smgan") plus L1: the reference trainer's original objective.

The loss object has the same two methods as :class:`scatloss.SCATCriterion`, so the training loop calls
``loss.discriminator_step(prediction, image, hole)`` and ``loss.generator_step(prediction, image, hole)``
whichever objective it trains, and the scatloss retrofit only changes how ``loss`` (and ``D``) are built.

smgan, as in AOT-GAN (Zeng et al., TVCG 2022; ``src/loss/loss.py`` of researchmm/AOT-GAN-for-Inpainting):

* ``D`` is an SN-PatchGAN; its ``(B, 1, h, w)`` logit map is upsampled (bilinear, ``align_corners=True``)
  to the mask size ``(H, W)``;
* discriminator: least squares, target on the composite = the **Gaussian-blurred hole mask** (soft labels:
  pixels deep inside a hole are fake, known pixels far from a hole are real, a smooth ramp between),
  target on the ground truth = 0:  ``mean((D(x-) - blur(hole))^2) + mean(D(x)^2)``;
* generator: least squares towards 1 (with ``D`` frozen), **weighted by the hole mask**:
  ``mean((D(x-) - 1)^2 * hole) / mean(hole)`` (``weighting="hole"``, the default). AOT-GAN's release
  computes ``MSELoss()(g, 1) * masks / mean(masks)`` and then its mean: the ``MSELoss`` has already
  reduced to a scalar, so the mask factor cancels and the term is the plain mean over all pixels;
  ``weighting="release"`` reproduces that;
* blur: AOT-GAN uses a 71x71 kernel with sigma 10 at its 512x512 training size. Both are scaled with the
  image here (:func:`smgan_blur_for_size`: ``71 * S / 512`` rounded to the nearest odd size >= 3, ``10 * S / 512``),
  so the soft border covers the same fraction of the image at every size (9 / 1.25 at 64x64, 35 / 5 at
  256x256). The blur pads with zeros, as AOT-GAN's ``gaussian_blur`` does.

Shapes: ``prediction``, ``image`` ``(B, C, H, W)`` in ``[-1, 1]``; ``hole`` ``(B, 1, H, W)``, 1 = missing.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from scatloss import functional as SF
from scatloss.utils import frozen_parameters

__all__ = [
    "AOTGAN_BLUR",
    "SoftMaskPatchGANLoss",
    "gaussian_blur",
    "gaussian_kernel1d",
    "smgan_blur_for_size",
    "smgan_discriminator_loss",
    "smgan_generator_loss",
]

AOTGAN_BLUR: tuple[int, float, int] = (71, 10.0, 512)
"""AOT-GAN's blur of the hole mask: ``(kernel size, sigma, the image size they were chosen for)``."""

Weighting = Literal["hole", "release"]


def smgan_blur_for_size(size: int) -> tuple[int, float]:
    """AOT-GAN's ``(71, 10.0)`` at 512x512 scaled to ``size``: ``(odd kernel >= 3, sigma)``.

    >>> smgan_blur_for_size(512), smgan_blur_for_size(256), smgan_blur_for_size(64)
    ((71, 10.0), (35, 5.0), (9, 1.25))
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int (image side in pixels), got {size!r}")
    kernel, sigma, reference = AOTGAN_BLUR
    k = max(3, 2 * round((kernel * size / reference - 1) / 2) + 1)  # the nearest odd size
    return k, sigma * size / reference


def gaussian_kernel1d(kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(kernel_size,)`` centred on ``kernel_size // 2`` (AOT-GAN's ``gaussian``)."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive number, got {sigma!r}")
    x = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(x**2) / (2.0 * float(sigma) ** 2))
    return (g / g.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of every channel with zero padding; ``(B, C, H, W) -> (B, C, H, W)``.

    Separable (rows, then columns): equal to AOT-GAN's 2-D kernel (an outer product) with zero padding.
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    c = x.shape[1]
    g = gaussian_kernel1d(kernel_size, sigma, dtype=x.dtype).to(x.device)
    p = kernel_size // 2
    out = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), padding=(0, p), groups=c)
    return F.conv2d(out, g.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), padding=(p, 0), groups=c)


def _to_mask_size(logits: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] == hole.shape[-2:]:
        return logits
    return F.interpolate(logits, size=tuple(hole.shape[-2:]), mode="bilinear", align_corners=True)


def smgan_discriminator_loss(
    fake_map: torch.Tensor, real_map: torch.Tensor, hole: torch.Tensor, kernel_size: int, sigma: float
) -> torch.Tensor:
    """``mean((D(x-) - blur(hole))^2) + mean(D(x)^2)`` with the maps upsampled to the mask size.

    Args:
        fake_map: ``(B, 1, h, w)`` PatchGAN map of the (detached) composites.
        real_map: ``(B, 1, h, w)`` PatchGAN map of the ground truths.
        hole: ``(B, 1, H, W)`` hole mask, 1 = missing.
    """
    hole = hole.to(fake_map.dtype)
    target = gaussian_blur(hole, kernel_size, sigma)
    fake = _to_mask_size(fake_map, hole)
    real = _to_mask_size(real_map, hole)
    return F.mse_loss(fake, target) + real.square().mean()


def smgan_generator_loss(fake_map: torch.Tensor, hole: torch.Tensor, weighting: Weighting = "hole") -> torch.Tensor:
    """``mean((D(x-) - 1)^2 * hole) / mean(hole)`` (``"hole"``) or ``mean((D(x-) - 1)^2)`` (``"release"``).

    With ``"hole"`` and a batch without any hole pixel the term is 0.
    """
    if weighting not in ("hole", "release"):
        raise ValueError(f"weighting: expected 'hole' or 'release', got {weighting!r}")
    hole = hole.to(fake_map.dtype)
    err = (_to_mask_size(fake_map, hole) - 1.0).square()
    if weighting == "release":
        return err.mean()
    return (err * hole).mean() / hole.mean().clamp_min(torch.finfo(err.dtype).tiny)


class SoftMaskPatchGANLoss(nn.Module):
    """AOT-GAN's objective: smgan (see the module docstring) + ``lambda_rec * L1(prediction, image)``.

    Same interface as :class:`scatloss.SCATCriterion`; the discriminator is held, not registered, so it
    is in neither ``parameters()`` (empty: this loss has no parameters) nor ``state_dict()``.

    Args:
        discriminator: an SN-PatchGAN, ``(B, C, H, W) -> (B, 1, h, w)`` logits.
        kernel_size, sigma: the blur of the hole mask (see :func:`smgan_blur_for_size`).
        lambda_adv: weight of the adversarial term in the generator's total (the discriminator's total is
            its smgan loss, unweighted).
        lambda_rec: weight of the L1 term.
        weighting: ``"hole"`` (default) or ``"release"``, see :func:`smgan_generator_loss`.

    Returns of the two steps: dicts of unweighted terms ``"adv"`` (and ``"rec"`` for the generator) plus the
    weighted ``"total"`` to call ``backward()`` on.
    """

    terms: tuple[str, ...] = ("adv", "rec")

    def __init__(
        self,
        discriminator: nn.Module,
        *,
        kernel_size: int,
        sigma: float,
        lambda_adv: float = 1.0,
        lambda_rec: float = 10.0,
        weighting: Weighting = "hole",
    ) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator: expected an nn.Module, got {type(discriminator).__name__}")
        gaussian_kernel1d(kernel_size, sigma)  # validates both
        if weighting not in ("hole", "release"):
            raise ValueError(f"weighting: expected 'hole' or 'release', got {weighting!r}")
        self._nets = {"D": discriminator}
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.lambda_adv = float(lambda_adv)
        self.lambda_rec = float(lambda_rec)
        self.weighting = weighting

    @property
    def discriminator(self) -> nn.Module:
        return self._nets["D"]

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, sigma={self.sigma:g}, lambda_adv={self.lambda_adv:g}, "
            f"lambda_rec={self.lambda_rec:g}, weighting={self.weighting!r}"
        )

    def _frozen(self) -> contextlib.AbstractContextManager[None]:
        return frozen_parameters(self.discriminator)

    def patch_map(self, x: torch.Tensor) -> torch.Tensor:
        """``D(x)`` upsampled to ``x``'s size, ``(B, 1, H, W)`` (its fake target is the blurred hole)."""
        return _to_mask_size(self.discriminator(x), x[:, :1])

    def discriminator_step(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"adv", "total"}`` for D; ``prediction`` is detached here."""
        comp = SF.composite(prediction.detach(), image, hole)
        d = self.discriminator
        adv = smgan_discriminator_loss(d(comp), d(image), hole, self.kernel_size, self.sigma)
        return {"adv": adv, "total": adv}

    def generator_step(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"adv", "rec", "total"}`` for G (``D``'s parameters get no gradient)."""
        comp = SF.composite(prediction, image, hole)
        with self._frozen():
            adv = smgan_generator_loss(self.discriminator(comp), hole, self.weighting)
        rec = SF.reconstruction_loss(prediction, image)
        return {"adv": adv, "rec": rec, "total": self.lambda_adv * adv + self.lambda_rec * rec}
