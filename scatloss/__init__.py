"""scatloss: the training objectives of Zuo et al., AAAI 2023, for any GAN inpainting trainer.

Segmentation confusion adversarial training (SCAT), textural and semantic contrastive losses, and the
global adversarial and reconstruction terms that complete the paper's objective (Eq. 8).

Hole masks are ``(B, 1, H, W)``, **1 = missing pixel**, float or bool, everywhere in this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import functional
from ._validation import set_value_checks, value_checks, value_checks_enabled
from .losses import (
    AdversarialLoss,
    InpaintingObjective,
    ReconstructionLoss,
    SCATLoss,
    SemanticContrastiveLoss,
    TexturalContrastiveLoss,
)

if TYPE_CHECKING:
    from .criterion import SCATCriterion
    from .taps import FeatureTap

__version__ = "0.1.0"

# Imported on first use, so `import scatloss` stays light and optional extras stay optional.
_LAZY = {
    "FeatureTap": ("scatloss.taps", "FeatureTap"),
    "SCATCriterion": ("scatloss.criterion", "SCATCriterion"),
}
_LAZY_MODULES = ("adapters", "criterion", "evaluate", "masks", "nets", "ops", "taps", "testing")

__all__ = [
    "AdversarialLoss",
    "FeatureTap",
    "InpaintingObjective",
    "ReconstructionLoss",
    "SCATCriterion",
    "SCATLoss",
    "SemanticContrastiveLoss",
    "TexturalContrastiveLoss",
    "__version__",
    "functional",
    "set_value_checks",
    "value_checks",
    "value_checks_enabled",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _LAZY_MODULES:
        return importlib.import_module(f"scatloss.{name}")
    raise AttributeError(f"module 'scatloss' has no attribute {name!r}")
