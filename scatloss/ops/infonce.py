r"""Fused semantic contrastive loss (Eq. 4, InfoNCE): normalisation, similarities, log-softmax and
their gradients in Triton, without materialising normalised copies or the ``(B, 1 + M)`` logits.

Called by :func:`scatloss.functional.semantic_contrastive_loss` when the backend resolves to
``"triton"``, with inputs already validated; the kernels, the gradient derivation and the custom-op
registration live in :mod:`scatloss.ops._infonce_triton`.

Behaviour worth knowing:

* **Normalisation** matches ``F.normalize(x, dim=-1)`` (``eps = 1e-12`` on the norm; zero vectors stay
  zero), done in registers. ``temperature`` divides the cosine similarities.
* **Precision.** Computed in ``promote_types(anchor.dtype, float32)``, as the reference: half and
  bfloat16 inputs give a float32 loss; gradients come back in each input's dtype.
* **Memory.** Saved for backward: the inputs themselves and the per-row log-sum-exp (``B`` floats).
  The backward re-reads the negatives once and writes their gradient only when they require one.
* **Strides.** Every input is read through its strides (slices, transposes, expanded negatives).
* **Determinism / sync.** Fixed-order reductions (bitwise reproducible), no host synchronisation.
"""

from __future__ import annotations

import torch

__all__ = ["semantic_contrastive_loss"]


def semantic_contrastive_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Fused :func:`scatloss.functional.semantic_contrastive_loss` (validated inputs; same arguments and result)."""
    from . import _infonce_triton  # imports triton; registers scatloss::infonce_fwd / infonce_bwd

    loss, _ = _infonce_triton.infonce_fwd(anchor, positive, negatives, float(temperature), bool(normalize), reduction)
    return loss
