r"""The paper's objective as functions: the one truth, in pure PyTorch.

Every loss of Zuo et al., "Generative Image Inpainting with Segmentation Confusion Adversarial
Training and Contrastive Learning" (AAAI 2023), Eq. 1-8, is a function here. The :mod:`torch.nn`
modules in :mod:`scatloss.losses` only hold configuration and call these.

Conventions
-----------
* ``hole`` is a ``(B, 1, H, W)`` float or bool mask with **1 = missing pixel** (AOT-GAN, LaMa and
  DeepFill use the same convention). The paper writes the complement ``m = 1 - hole``.
* Logit maps are ``(B, 1, h, w)`` *raw* scores (no sigmoid). When ``(h, w)`` differs from the mask's
  ``(H, W)`` the mask is resampled inside the loss (``resample="area" | "nearest" | "max"``, see
  :func:`scatloss.masks.resample_hole`).
* ``kind`` selects the adversarial form: ``"hinge"`` (the paper's and the release's choice),
  ``"bce"`` (Eq. 1/2/6 as printed, computed from logits) or ``"ls"`` (least squares).
* Bad input raises ``TypeError`` / ``ValueError`` naming the argument: wrong kinds, shapes, devices, an empty
  batch, options that are not finite or out of range, hole values outside ``[0, 1]`` (a value check: one
  device-to-host read, skipped inside :func:`scatloss._validation.validated` blocks, under
  ``scatloss.set_value_checks(False)``, while compiling and on ``meta`` tensors). NaN or infinite *logits and
  features* are not checked (that would cost a read per call): they propagate to the loss. Finite extremes are
  handled: pixels outside a mask's weight are selected out (an overflowing least-squares term does not become
  ``inf * 0``), and InfoNCE norms do not overflow (:func:`scatloss.reference.row_norms`).

Per-pixel form. With target :math:`t \in [0, 1]` (1 = "real"), every discriminator-side term is
:math:`t\,\ell^+(z) + (1-t)\,\ell^-(z)` with

=========  =========================  =========================  ========================
kind       :math:`\ell^+(z)` (real)   :math:`\ell^-(z)` (fake)   generator :math:`\ell^G(z)`
=========  =========================  =========================  ========================
hinge      :math:`\max(0, 1 - z)`     :math:`\max(0, 1 + z)`     :math:`-z`
bce        :math:`\log(1+e^{-z})`     :math:`\log(1+e^{z})`      :math:`\log(1+e^{-z})`
ls         :math:`(z - 1)^2`          :math:`z^2`                :math:`(z - 1)^2`
=========  =========================  =========================  ========================

For ``bce`` this is exactly binary cross-entropy on :math:`\sigma(z)` with (soft) target ``t``; for
``ls`` with a soft target it differs from :math:`(z-t)^2` by a constant only (same gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from . import reference as R
from ._validation import (
    check_bool,
    check_choice,
    check_float_tensor,
    check_hole,
    check_nonempty_batch,
    check_nonempty_map,
    check_number,
    check_same_batch,
    check_same_device,
    describe,
)
from .masks import RESAMPLE_MODES, Resample
from .ops import torch_fused as _fused

Kind = Literal["hinge", "bce", "ls"]
Region = Literal["hole", "all"]
Reduction = Literal["mean", "sum", "none"]

KINDS: tuple[str, ...] = ("hinge", "bce", "ls")
REGIONS: tuple[str, ...] = ("hole", "all")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")

__all__ = [
    "KINDS",
    "REDUCTIONS",
    "REGIONS",
    "Kind",
    "Reduction",
    "Region",
    "Resample",
    "adversarial_discriminator_loss",
    "adversarial_generator_loss",
    "composite",
    "corrupt",
    "reconstruction_loss",
    "scat_generator_loss",
    "scat_segmenter_loss",
    "semantic_contrastive_loss",
    "textural_contrastive_loss",
]


# ----------------------------------------------------------------------------------------------
# per-class adversarial terms
# ----------------------------------------------------------------------------------------------


# The per-class terms live in :mod:`scatloss.reference` (the equation-form baseline); aliased here.
_real_term = R.real_term
_fake_term = R.fake_term
_generator_term = R.generator_term


_reduce = R.reduce


def _check_logits(name: str, x: object) -> torch.Tensor:
    t = check_float_tensor(name, x, ndim=4)
    if t.shape[1] != 1:
        raise ValueError(f"{name}: expected a per-pixel logit map of shape (B, 1, h, w), got shape {tuple(t.shape)}")
    check_nonempty_batch(name, t)
    check_nonempty_map(name, t, "logit map")
    return t


SMALLEST_TEMPERATURE = float(torch.finfo(torch.float32).tiny)
"""Smallest accepted InfoNCE temperature: below it ``1 / t`` overflows float32 and the logits become ``inf - inf``."""


def check_temperature(temperature: object) -> float:
    """``temperature`` as a float: a finite number ``>= SMALLEST_TEMPERATURE`` (TypeError / ValueError otherwise)."""
    return check_number(
        "temperature", temperature, low=SMALLEST_TEMPERATURE, what="a positive float (finite, 1 / t finite in float32)"
    )


def check_textural_eps(eps: object) -> float:
    """``eps`` of Eq. 3 as a float: finite and ``> 0`` (``0`` makes a hole-free mask's term ``0 / 0``)."""
    return check_number("eps", eps, low=0.0, low_open=True, what="a finite number > 0")


_hole_at = _fused.hole_at


def _dispatch_backend(backend: str, *tensors: torch.Tensor, data: tuple[torch.Tensor, ...] = ()) -> str:
    """Resolve ``backend`` to ``"torch"`` or ``"triton"`` (see :mod:`scatloss.ops`); ``data``: inputs the kernels
    do not differentiate (``"auto"`` stays on PyTorch when one of them requires grad)."""
    check_choice("backend", backend, ("auto", "torch", "triton"))
    if backend == "torch":
        return "torch"
    from . import ops

    return ops.resolve_backend(backend, *tensors, data=data)


# ----------------------------------------------------------------------------------------------
# Eq. 1 and Eq. 2: SCAT
# ----------------------------------------------------------------------------------------------


def scat_segmenter_loss(
    fake_logits: torch.Tensor,
    real_logits: torch.Tensor,
    hole: torch.Tensor,
    *,
    kind: Kind = "hinge",
    resample: Resample = "area",
    reduction: Reduction = "mean",
    backend: Literal["auto", "torch", "triton"] = "auto",
) -> torch.Tensor:
    r"""SCAT, segmenter side (Eq. 1): label the known pixels of a composite real and its holes fake.

    .. math::
        \mathcal{L}_{SCAT}(S) = \frac{1}{BHW}\sum_{b,i}
            \big[(1-h_i)\,\ell^+(S(\bar x)_i) + h_i\,\ell^-(S(\bar x)_i)\big]
        + \frac{1}{BHW}\sum_{b,i} \ell^+(S(x)_i)

    where ``h`` is the hole mask at the logits' resolution. With ``kind="bce"`` this is Eq. 1 as
    printed (targets ``m = 1 - h`` for the composite and all-ones for the ground truth); the hinge
    form equals the released code's ``mean(relu(1 - S(x))) + mean(relu(1 - S(x-)) * valid) +
    mean(relu(1 + S(x-)) * hole)``.

    Args:
        fake_logits: ``(B, 1, h, w)`` segmenter logits on the composite :math:`\bar x` (detached from G).
        real_logits: ``(B, 1, h, w)`` segmenter logits on the ground truth :math:`x`.
        hole: ``(B, 1, H, W)`` hole mask (1 = missing), float or bool, values in ``[0, 1]``;
            resampled to ``(h, w)`` when sizes differ.
        kind: ``"hinge"`` | ``"bce"`` | ``"ls"``.
        resample: how the mask is brought to the logits' resolution: ``"area"`` | ``"nearest"`` | ``"max"``.
        reduction: ``"mean"`` (scalar; each of the two terms is a mean over all ``B*h*w`` pixels),
            ``"sum"`` (scalar) or ``"none"`` (``(B, 1, h, w)`` per-pixel sum of both terms, so that
            ``mean``/``sum`` equal ``none.mean()``/``none.sum()``).
        backend: ``"auto"`` (fused Triton kernel for CUDA tensors when Triton is installed, PyTorch
            otherwise), ``"torch"`` or ``"triton"``.

    Returns:
        Scalar, or ``(B, 1, h, w)`` for ``reduction="none"``; dtype of the logits.

    Raises:
        TypeError: non-floating logits, a hole that is neither float nor bool.
        ValueError: shapes (batch mismatch, a hole with more than one channel, logits not ``(B, 1, h, w)``
            or of different shapes, an empty batch or a map with no rows or columns), hole values outside
            ``[0, 1]``, unknown options.
    """
    fake_logits = _check_logits("fake_logits", fake_logits)
    real_logits = _check_logits("real_logits", real_logits)
    if fake_logits.shape != real_logits.shape:
        raise ValueError(
            "real_logits: expected the same shape as fake_logits "
            f"{tuple(fake_logits.shape)}, got {tuple(real_logits.shape)}"
        )
    check_hole(hole, batch=fake_logits.shape[0])
    check_same_device(fake_logits=fake_logits, real_logits=real_logits, hole=hole)
    check_choice("kind", kind, KINDS)
    check_choice("resample", resample, RESAMPLE_MODES)
    check_choice("reduction", reduction, REDUCTIONS)
    if _dispatch_backend(backend, fake_logits, real_logits, hole, data=(hole,)) == "triton":
        from .ops import scat as _ops

        return _ops.scat_segmenter_loss(
            fake_logits, real_logits, hole, kind=kind, resample=resample, reduction=reduction
        )
    if hole.requires_grad and torch.is_grad_enabled():  # the mask's gradient goes through resample_hole's autograd
        return _fused.scat_segmenter(fake_logits, real_logits, _hole_at(hole, fake_logits, resample), kind, reduction)
    return _fused.scat_segmenter_hole(fake_logits, real_logits, hole, resample, kind, reduction)


def scat_generator_loss(
    fake_logits: torch.Tensor,
    hole: torch.Tensor,
    *,
    kind: Kind = "hinge",
    region: Region = "hole",
    resample: Resample = "area",
    reduction: Reduction = "mean",
    backend: Literal["auto", "torch", "triton"] = "auto",
) -> torch.Tensor:
    r"""SCAT, generator side (Eq. 2): make the segmenter label every pixel of the composite real.

    .. math::
        \mathcal{L}_{SCAT}(G) = \frac{1}{BHW}\sum_{b,i} w_i\,\ell^G(S(\bar x)_i),\qquad
        w = h \text{ (region="hole")}\ \text{or}\ 1 \text{ (region="all")}

    ``region="all"`` is Eq. 2 as printed (all pixels, all-ones target). ``region="hole"`` (default)
    is the released code, which restricts the term to hole pixels (``mean(-S(x-) * hole)`` for hinge)
    while still dividing by all ``B*h*w`` pixels.

    Args:
        fake_logits: ``(B, 1, h, w)`` segmenter logits on the composite (with gradient to G).
        hole: ``(B, 1, H, W)`` hole mask (1 = missing), resampled to ``(h, w)`` when sizes differ.
        kind: ``"hinge"`` (:math:`-z`) | ``"bce"`` (non-saturating :math:`\log(1+e^{-z})`) | ``"ls"``.
        region: ``"hole"`` (released code) | ``"all"`` (paper).
        resample: ``"area"`` | ``"nearest"`` | ``"max"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B, 1, h, w)`` weighted per-pixel terms).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.

    Returns:
        Scalar, or ``(B, 1, h, w)`` for ``reduction="none"``.

    Raises:
        TypeError, ValueError: as :func:`scat_segmenter_loss`, plus an unknown ``region``.
    """
    fake_logits = _check_logits("fake_logits", fake_logits)
    check_hole(hole, batch=fake_logits.shape[0])
    check_same_device(fake_logits=fake_logits, hole=hole)
    check_choice("kind", kind, KINDS)
    check_choice("region", region, REGIONS)
    check_choice("resample", resample, RESAMPLE_MODES)
    check_choice("reduction", reduction, REDUCTIONS)
    if _dispatch_backend(backend, fake_logits, hole, data=(hole,) if region == "hole" else ()) == "triton":
        from .ops import scat as _ops

        return _ops.scat_generator_loss(
            fake_logits, hole, kind=kind, region=region, resample=resample, reduction=reduction
        )
    if region == "all":
        return _fused.scat_generator(fake_logits, None, kind, reduction)
    if hole.requires_grad and torch.is_grad_enabled():  # the mask's gradient goes through resample_hole's autograd
        return _fused.scat_generator(fake_logits, _hole_at(hole, fake_logits, resample), kind, reduction)
    return _fused.scat_generator_hole(fake_logits, hole, resample, kind, reduction)


# ----------------------------------------------------------------------------------------------
# Eq. 6: global adversarial loss
# ----------------------------------------------------------------------------------------------


def adversarial_discriminator_loss(
    fake_logits: torch.Tensor, real_logits: torch.Tensor, *, kind: Kind = "hinge"
) -> torch.Tensor:
    r"""Global adversarial loss, discriminator side (Eq. 6).

    .. math:: \mathcal{L}_{adv}(D) = \operatorname{mean}\,\ell^+(D(x)) + \operatorname{mean}\,\ell^-(D(\bar x))

    Args:
        fake_logits: ``(B, ...)`` discriminator logits on composites (a global ``(B, 1)`` logit or a
            patch map); averaged over every element.
        real_logits: ``(B', ...)`` logits on ground-truth images (shape may differ from the fakes').
        kind: ``"hinge"`` (paper and release) | ``"bce"`` (Eq. 6 as printed) | ``"ls"``.

    Returns:
        Scalar.
    """
    fake_logits = check_float_tensor("fake_logits", fake_logits)
    real_logits = check_float_tensor("real_logits", real_logits)
    check_choice("kind", kind, KINDS)
    _check_nonempty("fake_logits", fake_logits)
    _check_nonempty("real_logits", real_logits)
    check_same_device(fake_logits=fake_logits, real_logits=real_logits)
    return _real_term(real_logits, kind).mean() + _fake_term(fake_logits, kind).mean()


def adversarial_generator_loss(fake_logits: torch.Tensor, *, kind: Kind = "hinge") -> torch.Tensor:
    r"""Global adversarial loss, generator side (Eq. 6; non-saturating for ``"bce"``).

    .. math:: \mathcal{L}_{adv}(G) = \operatorname{mean}\,\ell^G(D(\bar x))

    Args:
        fake_logits: ``(B, ...)`` discriminator logits on composites (with gradient to G).
        kind: ``"hinge"`` (:math:`-z`) | ``"bce"`` | ``"ls"``.

    Returns:
        Scalar.
    """
    fake_logits = check_float_tensor("fake_logits", fake_logits)
    check_choice("kind", kind, KINDS)
    _check_nonempty("fake_logits", fake_logits)
    return _generator_term(fake_logits, kind).mean()


def _check_nonempty(name: str, x: torch.Tensor) -> None:
    check_nonempty_batch(name, x)
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor of shape (B, ...), got shape {tuple(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Eq. 3: textural contrastive loss
# ----------------------------------------------------------------------------------------------


def _check_feature_lists(
    anchor_feats: Sequence[torch.Tensor],
    positive_feats: Sequence[torch.Tensor],
    negative_feats: Sequence[torch.Tensor],
) -> None:
    lists = {"anchor_feats": anchor_feats, "positive_feats": positive_feats, "negative_feats": negative_feats}
    for name, feats in lists.items():
        if isinstance(feats, torch.Tensor) or not isinstance(feats, Sequence):
            raise TypeError(f"{name}: expected a sequence (list or tuple) of per-layer tensors, got {describe(feats)}")
        if len(feats) == 0:
            raise ValueError(f"{name}: expected at least one layer, got an empty sequence")
    lengths = {name: len(feats) for name, feats in lists.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{n} has {k}" for n, k in lengths.items())
        raise ValueError(f"feature lists: expected the same number of layers in each, got {detail}")
    for i, (a, p, n) in enumerate(zip(anchor_feats, positive_feats, negative_feats, strict=True)):
        check_float_tensor(f"anchor_feats[{i}]", a)
        check_float_tensor(f"positive_feats[{i}]", p)
        check_float_tensor(f"negative_feats[{i}]", n)
        if a.dim() >= 1:
            check_nonempty_batch(f"anchor_feats[{i}]", a)
        check_same_device(**{f"anchor_feats[{i}]": a, f"positive_feats[{i}]": p, f"negative_feats[{i}]": n})
        check_same_device(**{"anchor_feats[0]": anchor_feats[0], f"anchor_feats[{i}]": a})
        if a.dim() < 2 or a.numel() == 0:
            raise ValueError(f"anchor_feats[{i}]: expected a non-empty (B, ...) tensor, got shape {tuple(a.shape)}")
        if p.shape != a.shape or n.shape != a.shape:
            raise ValueError(
                f"feature lists: layer {i} expected the same shape for anchor, positive and negative, got "
                f"anchor {tuple(a.shape)}, positive {tuple(p.shape)}, negative {tuple(n.shape)}"
            )


def _ratio(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / (den + eps)``, and exactly 0 where ``num == 0``: an ``eps`` below the features' precision (1e-50 in
    float32) must not turn a hole-free mask's ``0 / 0`` into NaN. The denominator is replaced, not the quotient
    selected, so the gradient stays finite as well (``|a - p|`` has gradient 0 at ``a == p``)."""
    return num / torch.where(num == 0, torch.ones_like(den), den + eps)


def textural_contrastive_loss(
    anchor_feats: Sequence[torch.Tensor],
    positive_feats: Sequence[torch.Tensor],
    negative_feats: Sequence[torch.Tensor],
    *,
    eps: float = 1e-7,
    per_sample: bool = False,
) -> torch.Tensor:
    r"""Textural contrastive loss (Eq. 3) over ``N`` shallow discriminator layers, L1 distance.

    .. math::
        \mathcal{L}^{text}_{contra} = \sum_{i=1}^{N}
            \frac{d(D_i(\bar x), D_i(x))}{d(D_i(\bar x), D_i(\tilde x)) + \epsilon}

    Default (``per_sample=False``, the released code): ``d`` is the mean absolute difference over
    the whole batch, so each term is a ratio of batch means. ``per_sample=True`` is Eq. 3 as
    printed: the ratio is formed per sample and the expectation is the mean of per-sample ratios.

    Args:
        anchor_feats: ``N`` tensors ``(B, C_i, H_i, W_i)`` (any ``(B, ...)``), features of the composite.
        positive_feats: same shapes, features of the ground truth (pulled towards).
        negative_feats: same shapes, features of the corrupted input (pushed from).
        eps: added to each denominator; with anchor == negative (a hole-free mask) and anchor ==
            positive the term is exactly 0.
        per_sample: see above.

    Returns:
        Scalar, the sum over layers.

    Raises:
        TypeError: a list that is not a sequence of floating tensors.
        ValueError: lists of different lengths, layers of different shapes, empty lists or batches, layers on
            different devices, ``eps`` not finite and ``> 0`` (``eps = 0`` makes a hole-free mask ``0 / 0``).
    """
    _check_feature_lists(anchor_feats, positive_feats, negative_feats)
    eps = check_textural_eps(eps)
    check_bool("per_sample", per_sample)
    total: torch.Tensor | None = None
    for a, p, n in zip(anchor_feats, positive_feats, negative_feats, strict=True):
        if per_sample:
            dims = tuple(range(1, a.dim()))
            num = (a - p).abs().mean(dim=dims)
            term = _ratio(num, (a - n).abs().mean(dim=dims), eps).mean()
        else:
            term = _ratio((a - p).abs().mean(), (a - n).abs().mean(), eps)
        total = term if total is None else total + term
    return total  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Eq. 4: semantic contrastive loss (InfoNCE)
# ----------------------------------------------------------------------------------------------


def semantic_contrastive_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    *,
    temperature: float = 0.07,
    normalize: bool = True,
    reduction: Reduction = "mean",
    backend: Literal["auto", "torch", "triton"] = "auto",
    normalize_eps: float | None = None,
) -> torch.Tensor:
    r"""Semantic contrastive loss (Eq. 4): InfoNCE with one positive and ``M`` negatives per anchor.

    .. math::
        \mathcal{L}^{sem}_{contra} = -\log
        \frac{e^{a\cdot p / t}}{e^{a\cdot p / t} + \sum_{j=1}^{M} e^{a\cdot n_j / t}}

    with :math:`a, p, n_j` L2-normalised when ``normalize=True`` (cosine similarities). The
    released code normalises but never applies its stored temperature of 0.07: pass
    ``temperature=1.0`` to reproduce it. With all similarities equal the loss is
    :math:`\log(1 + M)`; it is always :math:`\ge 0`.

    Args:
        anchor: ``(B, D)`` features of the composites.
        positive: ``(B, D)`` features of the ground truths.
        negatives: ``(B, M, D)`` features of ``M`` corrupted versions of each ground truth.
        temperature: ``t``, finite and at least :data:`SMALLEST_TEMPERATURE` (``1 / t`` must be finite in float32).
        normalize: L2-normalise the three inputs along ``D`` (zero vectors stay zero). Each vector is divided by
            its largest absolute entry (or accumulated in float64) when its norm is taken, so norms that would
            overflow float32 (any entry above about ``1.8e19``) or underflow are exact; NaN or infinite features
            give a NaN loss.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B,)``).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (fused kernel, see :mod:`scatloss.ops`).
        normalize_eps: ``None`` (default): ``x / max(|x|, 1e-12)`` as ``F.normalize``; a float ``e >= 0``:
            ``x / (|x| + e)``, the released code's form (``e = 1e-7``; a relative difference of about ``e / |x|``).
            The additive form is applied in PyTorch (autograd, in at least float32) before the chosen backend,
            which then runs with ``normalize=False``: every backend honours it, at the cost of normalised copies.

    Returns:
        Scalar, or ``(B,)`` for ``reduction="none"``. Computed in at least float32.

    Raises:
        TypeError: non-floating inputs, a non-number temperature.
        ValueError: wrong dimensionality (negatives not 3-D), mismatched ``B``/``D``, ``B = 0``, ``M = 0``,
            inputs on different devices, a temperature that is NaN, infinite or below
            :data:`SMALLEST_TEMPERATURE`, unknown reduction.
    """
    anchor = check_float_tensor("anchor", anchor, ndim=2)
    positive = check_float_tensor("positive", positive, ndim=2)
    negatives = check_float_tensor("negatives", negatives, ndim=3)
    check_same_batch(anchor=anchor, positive=positive, negatives=negatives)
    check_nonempty_batch("anchor", anchor)
    check_same_device(anchor=anchor, positive=positive, negatives=negatives)
    if positive.shape != anchor.shape:
        raise ValueError(f"positive: expected shape {tuple(anchor.shape)} like anchor, got {tuple(positive.shape)}")
    if negatives.shape[2] != anchor.shape[1]:
        raise ValueError(
            f"negatives: expected feature size D={anchor.shape[1]} like anchor (shape (B, M, D)), "
            f"got shape {tuple(negatives.shape)}"
        )
    if negatives.shape[1] == 0:
        raise ValueError("negatives: expected at least one negative per anchor (M >= 1), got M = 0")
    temperature = check_temperature(temperature)
    check_bool("normalize", normalize)
    check_choice("reduction", reduction, REDUCTIONS)
    if normalize and normalize_eps is not None:
        eps = check_number("normalize_eps", normalize_eps, low=0.0, what="None or a finite number >= 0")
        dtype = torch.promote_types(anchor.dtype, torch.float32)
        anchor, positive, negatives = (R.l2_normalize_additive(x.to(dtype), eps) for x in (anchor, positive, negatives))
        normalize = False
    if _dispatch_backend(backend, anchor, positive, negatives) == "triton":
        from .ops import infonce as _ops

        return _ops.semantic_contrastive_loss(
            anchor, positive, negatives, temperature=float(temperature), normalize=normalize, reduction=reduction
        )
    return _fused.infonce(anchor, positive, negatives, float(temperature), bool(normalize), reduction)


# ----------------------------------------------------------------------------------------------
# Eq. 7 and image helpers
# ----------------------------------------------------------------------------------------------


def reconstruction_loss(
    prediction: torch.Tensor, image: torch.Tensor, *, reduction: Reduction = "mean"
) -> torch.Tensor:
    r"""Reconstruction loss (Eq. 7): :math:`\lVert \hat x - x \rVert_1`, mean absolute error.

    Args:
        prediction: ``(B, C, H, W)`` raw generator output :math:`\hat x` (not the composite).
        image: ``(B, C, H, W)`` ground truth.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (``(B,)`` per-sample means); ``"sum"`` is the sum
            of the per-sample means, so that ``mean``/``sum`` equal ``none.mean()``/``none.sum()``.
    """
    prediction = check_float_tensor("prediction", prediction, ndim=4)
    image = check_float_tensor("image", image, ndim=4)
    if prediction.shape != image.shape:
        raise ValueError(f"prediction: expected the shape of image {tuple(image.shape)}, got {tuple(prediction.shape)}")
    check_nonempty_batch("prediction", prediction)
    check_same_device(prediction=prediction, image=image)
    check_choice("reduction", reduction, REDUCTIONS)
    err = (prediction - image).abs()
    if reduction == "mean":
        return err.mean()
    return _reduce(err.mean(dim=(1, 2, 3)), reduction)


def _check_image_and_hole(image_name: str, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    check_float_tensor(image_name, image, ndim=4)
    check_hole(hole, batch=image.shape[0])
    check_same_device(**{image_name: image, "hole": hole})
    if hole.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"hole: expected the spatial size of {image_name} {tuple(image.shape[-2:])}, "
            f"got {tuple(hole.shape[-2:])}; resize the mask with scatloss.masks.resample_hole"
        )
    return hole.to(image.dtype)  # a float64 or bool mask must not change the image's dtype


def composite(prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    r"""The composite :math:`\bar x = (1 - m)\,\hat x + m\,\tilde x`: prediction in holes, ground truth elsewhere.

    With the hole mask ``h = 1 - m``: ``h * prediction + (1 - h) * image`` (soft masks blend).

    Args:
        prediction: ``(B, C, H, W)`` generator output.
        image: ``(B, C, H, W)`` ground truth (or the corrupted input: identical outside holes).
        hole: ``(B, 1, H, W)`` hole mask (1 = missing).

    Returns:
        ``(B, C, H, W)``; gradient flows to ``prediction`` through hole pixels only.
    """
    check_float_tensor("prediction", prediction, ndim=4)
    h = _check_image_and_hole("image", image, hole)
    check_same_device(prediction=prediction, image=image)
    if prediction.shape != image.shape:
        raise ValueError(f"prediction: expected the shape of image {tuple(image.shape)}, got {tuple(prediction.shape)}")
    return h * prediction + (1.0 - h) * image


def corrupt(image: torch.Tensor, hole: torch.Tensor, fill: float = 1.0) -> torch.Tensor:
    r"""The corrupted input :math:`\tilde x`: ``image`` with its holes set to ``fill``.

    The paper writes :math:`\tilde x = x \odot m` (fill 0); the released code (and AOT-GAN) fill
    holes with 1.0, white for images in ``[-1, 1]``, which is the default here. The same function
    builds the semantic loss's negatives (``x`` corrupted by other masks).

    Args:
        image: ``(B, C, H, W)``.
        hole: ``(B, 1, H, W)`` hole mask (1 = missing).
        fill: value written into the holes.

    Returns:
        ``(B, C, H, W)`` ``image * (1 - hole) + fill * hole``.

    Raises:
        TypeError: ``fill`` is not a number (e.g. ``"white"``); the tensors' kinds as :func:`composite`.
        ValueError: ``fill`` is NaN or infinite; shapes, devices or hole values as :func:`composite`.
    """
    h = _check_image_and_hole("image", image, hole)
    fill = check_number("fill", fill, what="a finite float")
    return image * (1.0 - h) + fill * h
