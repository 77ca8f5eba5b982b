"""Adapters that plug SCAT and the contrastive losses into existing trainers, with no host import.

* :mod:`scatloss.adapters.aotgan`: :class:`~scatloss.adapters.aotgan.SCATDiscriminator` wraps an AOT-GAN
  discriminator (adds the segmenter and the projection head), :class:`~scatloss.adapters.aotgan.SCATGANLoss`
  follows AOT-GAN's ``dis_loss, gen_loss = adv_loss(netD, fake, real, masks)`` protocol.
* :mod:`scatloss.adapters.lama`: :class:`~scatloss.adapters.lama.SCATAdversarialLoss` follows LaMa's
  ``BaseAdversarialLoss`` protocol (``pre_generator_step`` / ``generator_loss`` / ``pre_discriminator_step`` /
  ``discriminator_loss``).
* :mod:`scatloss.adapters.release`: a drop-in for the loss module of the authors' released trainer
  (zzw-zjgsu/Generative-Image-Inpainting): ``from scatloss.adapters import release as loss_module``.

All compute their terms through :class:`scatloss.SCATCriterion`, so they inherit its exact gradients, its
one autograd discriminator pass per generator step and its frozen-discriminator generator graph. The helpers
they share (boundary checks, layer detection, DDP unwrapping, checkpoint migration) live in
:mod:`scatloss.adapters._common`. The adapter submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._common import load_optimizer_state
    from .aotgan import SCATDiscriminator, SCATGANLoss
    from .lama import SCATAdversarialLoss
    from .release import ReleaseAdversarial, ReleaseContrastive

__all__ = [
    "ReleaseAdversarial",
    "ReleaseContrastive",
    "SCATAdversarialLoss",
    "SCATDiscriminator",
    "SCATGANLoss",
    "aotgan",
    "lama",
    "load_optimizer_state",
    "release",
]

_LAZY = {
    "SCATDiscriminator": ("scatloss.adapters.aotgan", "SCATDiscriminator"),
    "SCATGANLoss": ("scatloss.adapters.aotgan", "SCATGANLoss"),
    "SCATAdversarialLoss": ("scatloss.adapters.lama", "SCATAdversarialLoss"),
    "load_optimizer_state": ("scatloss.adapters._common", "load_optimizer_state"),
    "ReleaseAdversarial": ("scatloss.adapters.release", "ReleaseAdversarial"),
    "ReleaseContrastive": ("scatloss.adapters.release", "ReleaseContrastive"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("aotgan", "lama", "release"):
        return importlib.import_module(f"scatloss.adapters.{name}")
    raise AttributeError(f"module 'scatloss.adapters' has no attribute {name!r}")
