"""``nn.Module`` twins of :mod:`scatloss.functional` and the paper's overall objective (Eq. 8).

Each module only holds configuration and calls its functional twin; the one exception is the
optional projection head of :class:`SemanticContrastiveLoss`, which owns trainable parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from . import functional as SF
from ._validation import check_bool, check_choice, check_float_tensor, check_hole, check_number, check_sizes
from .functional import KINDS, REDUCTIONS, REGIONS, Kind, Reduction, Region, Resample
from .masks import RESAMPLE_MODES

Backend = Literal["auto", "torch", "triton"]

__all__ = [
    "AdversarialLoss",
    "InpaintingObjective",
    "ReconstructionLoss",
    "SCATLoss",
    "SemanticContrastiveLoss",
    "TexturalContrastiveLoss",
]


class SCATLoss(nn.Module):
    """Segmentation confusion adversarial training (Eq. 1 and Eq. 2).

    ``loss(fake_logits, hole)`` is the generator side (Eq. 2, :func:`~scatloss.functional.scat_generator_loss`);
    ``loss.segmenter(fake_logits, real_logits, hole)`` is the segmenter side (Eq. 1,
    :func:`~scatloss.functional.scat_segmenter_loss`).

    Args:
        kind: ``"hinge"`` (default, paper and release) | ``"bce"`` | ``"ls"``.
        region: generator term over ``"hole"`` pixels (released code, default) or ``"all"`` (Eq. 2 as printed).
        resample: mask resampling when the logit map is smaller: ``"area"`` | ``"nearest"`` | ``"max"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.

    Shape:
        - fake_logits, real_logits: ``(B, 1, h, w)``
        - hole: ``(B, 1, H, W)``, 1 = missing
        - output: scalar, or ``(B, 1, h, w)`` for ``reduction="none"``

    Example:
        >>> import torch, scatloss
        >>> loss = scatloss.SCATLoss()
        >>> hole = torch.zeros(2, 1, 8, 8); hole[:, :, 2:6, 2:6] = 1
        >>> loss(torch.randn(2, 1, 8, 8), hole).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        kind: Kind = "hinge",
        region: Region = "hole",
        resample: Resample = "area",
        reduction: Reduction = "mean",
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)
        self.region = check_choice("region", region, REGIONS)
        self.resample = check_choice("resample", resample, RESAMPLE_MODES)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = check_choice("backend", backend, ("auto", "torch", "triton"))

    def forward(self, fake_logits: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Generator side (Eq. 2)."""
        return SF.scat_generator_loss(
            fake_logits,
            hole,
            kind=self.kind,  # type: ignore[arg-type]
            region=self.region,  # type: ignore[arg-type]
            resample=self.resample,  # type: ignore[arg-type]
            reduction=self.reduction,  # type: ignore[arg-type]
            backend=self.backend,  # type: ignore[arg-type]
        )

    def segmenter(self, fake_logits: torch.Tensor, real_logits: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Segmenter side (Eq. 1)."""
        return SF.scat_segmenter_loss(
            fake_logits,
            real_logits,
            hole,
            kind=self.kind,  # type: ignore[arg-type]
            resample=self.resample,  # type: ignore[arg-type]
            reduction=self.reduction,  # type: ignore[arg-type]
            backend=self.backend,  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, region={self.region!r}, resample={self.resample!r}, reduction={self.reduction!r}"


class AdversarialLoss(nn.Module):
    """Global adversarial loss (Eq. 6).

    ``loss(fake_logits)`` is the generator side; ``loss.discriminator(fake_logits, real_logits)`` the
    discriminator side.

    Args:
        kind: ``"hinge"`` (default) | ``"bce"`` (non-saturating for G) | ``"ls"``.

    Shape:
        - fake_logits, real_logits: ``(B, ...)`` (a global ``(B, 1)`` logit or a patch map)
        - output: scalar
    """

    def __init__(self, *, kind: Kind = "hinge") -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)

    def forward(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return SF.adversarial_generator_loss(fake_logits, kind=self.kind)  # type: ignore[arg-type]

    def discriminator(self, fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
        return SF.adversarial_discriminator_loss(fake_logits, real_logits, kind=self.kind)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class TexturalContrastiveLoss(nn.Module):
    """Textural contrastive loss (Eq. 3); see :func:`~scatloss.functional.textural_contrastive_loss`.

    Args:
        eps: added to each denominator.
        per_sample: ``False`` = ratio of batch means (released code, default); ``True`` = mean of
            per-sample ratios (Eq. 3 as printed).

    Shape:
        - anchor_feats, positive_feats, negative_feats: sequences of ``N`` tensors ``(B, C_i, H_i, W_i)``
        - output: scalar
    """

    def __init__(self, *, eps: float = 1e-7, per_sample: bool = False) -> None:
        super().__init__()
        self.eps = SF.check_textural_eps(eps)
        self.per_sample = check_bool("per_sample", per_sample)

    def forward(
        self,
        anchor_feats: Sequence[torch.Tensor],
        positive_feats: Sequence[torch.Tensor],
        negative_feats: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        return SF.textural_contrastive_loss(
            anchor_feats, positive_feats, negative_feats, eps=self.eps, per_sample=self.per_sample
        )

    def extra_repr(self) -> str:
        return f"eps={self.eps}, per_sample={self.per_sample}"


class SemanticContrastiveLoss(nn.Module):
    """Semantic contrastive loss (Eq. 4, InfoNCE), with the released code's optional projection head.

    With ``in_features`` given, a trainable head ``Linear(in_features, hidden) -> ReLU -> Linear(hidden,
    out_features)`` (the release uses 1024 -> 256 -> 256) is applied to anchor, positive and every
    negative before the loss. The head belongs to the **generator's** optimiser, as in the release::

        sem = scatloss.SemanticContrastiveLoss(in_features=1024)
        opt_g = torch.optim.Adam([*generator.parameters(), *sem.parameters()], lr=1e-4)

    Without ``in_features`` the module has no parameters and only calls
    :func:`~scatloss.functional.semantic_contrastive_loss`.

    Args:
        temperature: ``t > 0``; default 0.07 (the paper's); ``1.0`` reproduces the released code.
        normalize: L2-normalise the (projected) features.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        in_features, hidden_features, out_features: projection head sizes (``None`` = no head).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.
        normalize_eps: ``None``: ``x / max(|x|, 1e-12)``; a float: ``x / (|x| + normalize_eps)`` (release: 1e-7).
        projection_init: ``"default"`` (PyTorch's ``nn.Linear`` init) or ``"orthogonal"`` (the release's:
            orthogonal weights with gain ``sqrt(2)``, zero biases).

    Shape:
        - anchor, positive: ``(B, D)``; negatives: ``(B, M, D)`` with ``D = in_features`` when a head is used
        - output: scalar, or ``(B,)`` for ``reduction="none"``
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        normalize: bool = True,
        reduction: Reduction = "mean",
        in_features: int | None = None,
        hidden_features: int = 256,
        out_features: int = 256,
        backend: Backend = "auto",
        normalize_eps: float | None = None,
        projection_init: Literal["default", "orthogonal"] = "default",
    ) -> None:
        super().__init__()
        self.normalize_eps = (
            None
            if normalize_eps is None
            else check_number("normalize_eps", normalize_eps, low=0.0, what="None or a finite number >= 0")
        )
        self.projection_init = check_choice("projection_init", projection_init, ("default", "orthogonal"))
        self.temperature = SF.check_temperature(temperature)
        self.normalize = check_bool("normalize", normalize)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = check_choice("backend", backend, ("auto", "torch", "triton"))
        self.projection: nn.Module | None = None
        self.in_features = in_features
        if in_features is not None:
            check_sizes(
                ("in_features", in_features), ("hidden_features", hidden_features), ("out_features", out_features)
            )
            self.projection = nn.Sequential(
                nn.Linear(in_features, hidden_features), nn.ReLU(), nn.Linear(hidden_features, out_features)
            )
            if self.projection_init == "orthogonal":
                init_projection_orthogonal(self.projection)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Apply the projection head (identity without one) to ``(..., D)`` features."""
        if self.projection is None:
            return features
        check_float_tensor("features", features)
        return self.projection(features)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            for name, x, ndim in (("anchor", anchor, 2), ("positive", positive, 2), ("negatives", negatives, 3)):
                check_float_tensor(name, x, ndim=ndim)
                if x.shape[-1] != self.in_features:
                    raise ValueError(
                        f"{name}: expected feature size D={self.in_features} (the projection head's in_features), "
                        f"got shape {tuple(x.shape)}"
                    )
            anchor, positive, negatives = self.project(anchor), self.project(positive), self.project(negatives)
        return SF.semantic_contrastive_loss(
            anchor,
            positive,
            negatives,
            temperature=self.temperature,
            normalize=self.normalize,
            reduction=self.reduction,  # type: ignore[arg-type]
            backend=self.backend,  # type: ignore[arg-type]
            normalize_eps=self.normalize_eps,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}"


def init_projection_orthogonal(head: nn.Module) -> nn.Module:
    """The release's head init, in place: every ``nn.Linear`` orthogonal with gain ``sqrt(2)``, bias 0."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2.0))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


class ReconstructionLoss(nn.Module):
    """L1 reconstruction loss (Eq. 7) on the raw prediction; see :func:`~scatloss.functional.reconstruction_loss`."""

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def forward(self, prediction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return SF.reconstruction_loss(prediction, image, reduction=self.reduction)  # type: ignore[arg-type]


def _check_weight(name: str, value: float) -> float:
    """A loss weight: a finite float ``>= 0`` (``inf`` would turn every zero term into ``inf * 0 = NaN``)."""
    return check_number(name, value, low=0.0, what="a finite weight >= 0")


FeatureTriple = tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[torch.Tensor]]
SemanticTriple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class InpaintingObjective(nn.Module):
    r"""The paper's overall objective (Eq. 8), term by term, for logging.

    .. math::
        \mathcal{L}_{total} = \lambda_{adv}(\mathcal{L}_{adv} + \mathcal{L}_{SCAT})
            + \lambda_{text}\mathcal{L}^{text}_{contra} + \lambda_{sem}\mathcal{L}^{sem}_{contra}
            + \lambda_{rec}\mathcal{L}_{rec}

    :meth:`forward` (alias :meth:`generator_loss`) gives the generator's terms, :meth:`discriminator_loss`
    the discriminator's and segmenter's. Every input except the reconstruction pair is optional: a
    term whose inputs are absent is left out (that is how the ablation's Baseline = adversarial + L1
    is expressed). The returned dict holds each present term **unweighted** under ``"adv"``, ``"scat"``,
    ``"text"``, ``"sem"``, ``"rec"``, and the weighted sum under ``"total"``.

    Args:
        lambda_adv, lambda_text, lambda_sem, lambda_rec: the paper's weights (1, 10, 1, 10).
        kind: adversarial form of the global term (``"hinge"``).
        scat_kind: adversarial form of SCAT (defaults to ``kind``).
        region, resample: SCAT options (see :class:`SCATLoss`).
        temperature, normalize, in_features, hidden_features, out_features: semantic-loss options
            (see :class:`SemanticContrastiveLoss`; its projection head, if any, lives in ``self.semantic``
            and goes to the generator's optimiser).
        eps, per_sample: textural-loss options.
        normalize_eps, projection_init: semantic-loss options (see :class:`SemanticContrastiveLoss`).
        weight_discriminator: multiply the discriminator's total by ``lambda_adv`` (default); ``False``: the
            release's unweighted D step (``total = adv + scat``).

    :meth:`release` builds the configuration of the authors' released code.
    """

    def __init__(
        self,
        *,
        lambda_adv: float = 1.0,
        lambda_text: float = 10.0,
        lambda_sem: float = 1.0,
        lambda_rec: float = 10.0,
        kind: Kind = "hinge",
        scat_kind: Kind | None = None,
        region: Region = "hole",
        resample: Resample = "area",
        temperature: float = 0.07,
        normalize: bool = True,
        in_features: int | None = None,
        hidden_features: int = 256,
        out_features: int = 256,
        eps: float = 1e-7,
        per_sample: bool = False,
        backend: Backend = "auto",
        normalize_eps: float | None = None,
        projection_init: Literal["default", "orthogonal"] = "default",
        weight_discriminator: bool = True,
    ) -> None:
        super().__init__()
        self.weight_discriminator = bool(weight_discriminator)
        self.lambda_adv = _check_weight("lambda_adv", lambda_adv)
        self.lambda_text = _check_weight("lambda_text", lambda_text)
        self.lambda_sem = _check_weight("lambda_sem", lambda_sem)
        self.lambda_rec = _check_weight("lambda_rec", lambda_rec)
        self.adversarial = AdversarialLoss(kind=kind)
        self.scat = SCATLoss(
            kind=kind if scat_kind is None else scat_kind, region=region, resample=resample, backend=backend
        )
        self.textural = TexturalContrastiveLoss(eps=eps, per_sample=per_sample)
        self.semantic = SemanticContrastiveLoss(
            temperature=temperature,
            normalize=normalize,
            in_features=in_features,
            hidden_features=hidden_features,
            out_features=out_features,
            backend=backend,
            normalize_eps=normalize_eps,
            projection_init=projection_init,
        )
        self.reconstruction = ReconstructionLoss()

    @classmethod
    def release(cls, in_features: int | None = 1024, **overrides: Any) -> InpaintingObjective:
        """The authors' released code, exactly: the options in which it differs from the defaults.

        Hinge for both terms, SCAT's generator term over holes, textural ratio of batch means with ``eps = 1e-7``,
        InfoNCE without temperature (``t = 1``) on features normalised as ``x / (|x| + 1e-7)``, a projection head
        ``in_features -> 256 -> ReLU -> 256`` initialised orthogonal (gain ``sqrt(2)``, zero bias), weights
        ``lambda_adv = 1, lambda_text = 10, lambda_sem = 1, lambda_rec = 10`` and an unweighted discriminator
        step. ``overrides`` replace any of these (e.g. ``in_features=None`` for no head).
        """
        options: dict[str, Any] = {
            "lambda_adv": 1.0, "lambda_text": 10.0, "lambda_sem": 1.0, "lambda_rec": 10.0, "kind": "hinge",
            "region": "hole", "temperature": 1.0, "normalize": True, "normalize_eps": 1e-7,
            "in_features": in_features, "hidden_features": 256, "out_features": 256, "projection_init": "orthogonal",
            "eps": 1e-7, "per_sample": False, "weight_discriminator": False,
        }  # fmt: skip
        options.update(overrides)
        return cls(**options)

    def weights(self) -> dict[str, float]:
        """The weight each named term gets in ``"total"``."""
        return {
            "adv": self.lambda_adv,
            "scat": self.lambda_adv,
            "text": self.lambda_text,
            "sem": self.lambda_sem,
            "rec": self.lambda_rec,
        }

    def _total(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.weights()
        total: torch.Tensor | None = None
        for name, value in terms.items():
            part = w[name] * value
            total = part if total is None else total + part
        if total is None:
            raise ValueError("InpaintingObjective: expected at least one term's inputs, got none")
        return {**terms, "total": total}

    def forward(
        self,
        prediction: torch.Tensor,
        image: torch.Tensor,
        hole: torch.Tensor,
        *,
        fake_logits: torch.Tensor | None = None,
        fake_pixel_logits: torch.Tensor | None = None,
        textural: FeatureTriple | None = None,
        semantic: SemanticTriple | None = None,
    ) -> dict[str, torch.Tensor]:
        """Generator-side terms.

        Args:
            prediction: ``(B, C, H, W)`` raw generator output :math:`\\hat x` (for Eq. 7).
            image: ``(B, C, H, W)`` ground truth.
            hole: ``(B, 1, H, W)`` hole mask (1 = missing).
            fake_logits: ``(B, ...)`` global discriminator logits on the composite (Eq. 6).
            fake_pixel_logits: ``(B, 1, h, w)`` segmenter logits on the composite (Eq. 2).
            textural: ``(anchor_feats, positive_feats, negative_feats)`` for Eq. 3.
            semantic: ``(anchor (B, D), positive (B, D), negatives (B, M, D))`` for Eq. 4.

        Returns:
            ``{"adv", "scat", "text", "sem", "rec"}`` (those present) and ``"total"``.
        """
        check_float_tensor("prediction", prediction, ndim=4)
        check_float_tensor("image", image, ndim=4)
        check_hole(hole, batch=image.shape[0])  # also when no SCAT term reads it: a wrong mask is a wrong call
        if hole.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"hole: expected the spatial size of image {tuple(image.shape[-2:])}, got {tuple(hole.shape[-2:])}"
            )
        terms: dict[str, torch.Tensor] = {}
        if fake_logits is not None:
            terms["adv"] = self.adversarial(fake_logits)
        if fake_pixel_logits is not None:
            terms["scat"] = self.scat(fake_pixel_logits, hole)
        if textural is not None:
            terms["text"] = self.textural(*textural)
        if semantic is not None:
            terms["sem"] = self.semantic(*semantic)
        terms["rec"] = self.reconstruction(prediction, image)
        return self._total(terms)

    generator_loss = forward

    def discriminator_loss(
        self,
        hole: torch.Tensor | None = None,
        *,
        fake_logits: torch.Tensor | None = None,
        real_logits: torch.Tensor | None = None,
        fake_pixel_logits: torch.Tensor | None = None,
        real_pixel_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Discriminator/segmenter-side terms: ``"adv"`` (Eq. 6) and ``"scat"`` (Eq. 1), and ``"total"``.

        ``total = lambda_adv * (adv + scat)``. Global logits and pixel logits come in pairs (fake and
        real); the SCAT pair needs ``hole``.
        """
        if hole is not None:
            check_hole(hole)
        terms: dict[str, torch.Tensor] = {}
        if (fake_logits is None) != (real_logits is None):
            raise ValueError("fake_logits, real_logits: expected both or neither, got only one")
        if (fake_pixel_logits is None) != (real_pixel_logits is None):
            raise ValueError("fake_pixel_logits, real_pixel_logits: expected both or neither, got only one")
        if fake_logits is not None and real_logits is not None:
            terms["adv"] = self.adversarial.discriminator(fake_logits, real_logits)
        if fake_pixel_logits is not None and real_pixel_logits is not None:
            if hole is None:
                raise ValueError("hole: expected a (B, 1, H, W) hole mask for the SCAT segmenter term, got None")
            terms["scat"] = self.scat.segmenter(fake_pixel_logits, real_pixel_logits, hole)
        if not self.weight_discriminator:
            if not terms:
                raise ValueError("InpaintingObjective: expected at least one term's inputs, got none")
            values = list(terms.values())
            total = values[0]
            for value in values[1:]:
                total = total + value
            return {**terms, "total": total}
        return self._total(terms)
