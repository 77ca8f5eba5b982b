r"""SCAT (and optionally both contrastive losses) as a LaMa adversarial loss (advimman/lama), no host import.

LaMa, as this adapter uses it (``saicinpainting/training``, checked against the repository):

* adversarial losses subclass ``BaseAdversarialLoss`` and are built by name in
  ``losses/adversarial.py``: ``make_discrim_loss(kind, **kwargs)`` (``kind: r1`` gives ``NonSaturatingWithR1``),
  called as ``make_discrim_loss(**config.losses.adversarial)``;
* the trainer calls, for the generator, ``pre_generator_step(real_batch=img, fake_batch=predicted_img,
  generator=..., discriminator=...)``, then runs the discriminator itself (``discr_real_pred,
  discr_real_features = self.discriminator(img)``, same for the fake), then ``generator_loss(real_batch,
  fake_batch, discr_real_pred, discr_fake_pred, mask) -> (loss, metrics)``; for the discriminator,
  ``pre_discriminator_step(...)`` (where ``NonSaturatingWithR1`` sets ``real_batch.requires_grad = True`` for its
  R1 penalty), the two discriminator calls on ``img`` and the detached fake, then ``discriminator_loss(...)``;
* images are in ``[0, 1]``, ``mask`` is 1 = hole, ``fake_batch`` is ``predicted_image`` (the raw prediction) or
  the composite ``mask * predicted_img + (1 - mask) * img``, depending on the trainer's config; the generator's
  input is ``img * (1 - mask)`` (holes filled with 0);
* the discriminators are PatchGANs returning ``(logits (B, 1, h, w), list_of_features)``;
* the two optimisers are built from ``self.generator.parameters()`` and ``self.discriminator.parameters()``.

Retrofit (docs/retrofitting.md has the diff)::

    # saicinpainting/training/losses/adversarial.py, in make_discrim_loss(kind, **kwargs); the import stays inside
    # the branch, so that prediction and the other loss kinds never need scatloss:
    elif kind == 'scat':
        from scatloss.adapters.lama import SCATAdversarialLoss
        return SCATAdversarialLoss(**kwargs)
    # trainers/base.py, configure_optimizers(): the segmenter to D's optimiser, the head (if any) to G's; getattr
    # keeps LaMa's own losses (NonSaturatingWithR1, BCELoss: plain objects without these methods) working
    extra_d = getattr(self.adversarial_loss, 'discriminator_parameters', tuple)
    extra_g = getattr(self.adversarial_loss, 'generator_parameters', tuple)
    discriminator_params = list(self.discriminator.parameters()) + list(extra_d())
    # ... make_optimizer(list(self.generator.parameters()) + list(extra_g()), ...)
    # config: losses.adversarial.kind: scat   (its other keys, e.g. weight / gp_coef / mask_as_fake_target, still apply)

Under Lightning's DDP strategy the whole training module, this loss and its segmenter included, is one DDP
module; the adapter runs inside its forward and needs nothing else (``negatives_from="global"`` for global
negatives).

Because the adapter is an ``nn.Module`` assigned as ``self.adversarial_loss`` of the LightningModule, Lightning
moves its segmenter to the device and checkpoints it (keys ``adversarial_loss.*``; a checkpoint from before the
retrofit lacks them: load it with ``strict=False``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import ValueChecks, check_choice, check_float_tensor, check_hole, describe, validated
from ..criterion import SCATCriterion
from ..functional import KINDS, Kind, Region
from ..losses import InpaintingObjective
from ..masks import Resample
from ..masks import resample_hole_unchecked as resample_hole  # the mask was checked in _check
from ..nets import UNetSegmenter
from ..reference import fake_term as _fake_term
from ..reference import generator_term as _generator_term
from ..reference import real_term as _real_term
from ._common import check_criterion_options, check_hole_convention, check_image_range, default_layers, layer_channels

__all__ = ["SCATAdversarialLoss"]

Pool = Literal["relu_sum", "mean", "flatten"]
MASK_SCALE_MODES: tuple[str, ...] = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "maxpool", "max")
"""LaMa's ``mask_scale_mode``: ``"maxpool"`` (``F.adaptive_max_pool2d``) or a 2-D ``F.interpolate`` mode; ``"max"``
is scatloss's max-resampling (kept for configs written for earlier versions)."""
_AUTO = "auto"


def _float(name: str, value: Any, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {describe(value)}")
    if not value >= minimum:
        raise ValueError(f"{name}: expected a value >= {minimum:g}, got {value!r}")
    return float(value)


class SCATAdversarialLoss(nn.Module):
    r"""A LaMa ``BaseAdversarialLoss`` with SCAT: the host's global PatchGAN term plus the segmenter's terms.

    **Global term** (from the ``discr_real_pred`` / ``discr_fake_pred`` the host passes; every patch counted).
    Keyword names and behaviour follow LaMa's ``NonSaturatingWithR1`` (assumed from the public repository) so
    that a config switching ``kind: r1`` to ``kind: scat`` keeps its other keys:

    * generator: ``weight * mean(l_G(D(fake)) * w)`` with ``w = mask`` if not ``use_unmasked_for_gen``, ``w = 1 +
      extra_mask_weight_for_gen * mask`` if ``mask_as_fake_target``, else 1;
    * discriminator: ``mean(l+(D(real)) + gp_coef * R1 + f)`` with ``f = l-(D(fake))``, multiplied by the mask if
      ``mask_as_fake_target`` or not ``use_unmasked_for_discr``, plus ``(1 - mask) * l+(D(fake))`` if
      ``mask_as_fake_target`` (known pixels of a fake labelled real). ``R1 = mean_b |grad_x D(real)|^2`` needs
      ``real_batch.requires_grad``, set by :meth:`pre_discriminator_step` when ``gp_coef > 0``;

    with ``l+, l-, l_G`` of ``kind`` (``"bce"``: LaMa's non-saturating softplus, default; ``"hinge"``: the paper's;
    ``"ls"``), see :mod:`scatloss.functional`. The mask is resampled to the patch map (``mask_scale_mode``).

    **SCAT** (Eqs. 1, 2): the adapter owns a segmenter ``S`` (default :class:`scatloss.nets.UNetSegmenter`) and runs
    it itself on the composite ``mask * fake + (1 - mask) * real`` (the composite, whichever of LaMa's two images
    ``fake_batch`` is) and on ``real``. Generator: ``+ lambda_scat * L_SCAT(G)`` (``lambda_scat`` defaults to
    ``weight``: the paper's :math:`\lambda_{adv}(\mathcal{L}_{adv} + \mathcal{L}_{SCAT})`); discriminator: ``+
    L_SCAT(S)``. S's parameters go to the **discriminator's** optimiser: :meth:`discriminator_parameters`.

    **Contrastive terms** (Eqs. 3, 4; off by default). LaMa does not pass discriminator features to its loss, so
    the adapter taps the discriminator itself (a :class:`~scatloss.taps.FeatureTap` through
    :class:`~scatloss.SCATCriterion`), given as ``discriminator=`` or, if not, taken from the ``discriminator``
    argument of :meth:`pre_generator_step`. Cost per generator step: one extra autograd forward of D on the
    composite, plus autograd-free early-exit passes on ``real``, on :math:`\tilde x` = ``real * (1 - mask) + fill *
    mask`` (``fill=0``, LaMa's input) and, for the semantic term, on ``B*(B-1)`` negatives (``negatives="batch"``).
    Those passes restore D's buffers (BatchNorm statistics, spectral-norm vectors); the autograd pass on the
    composite does advance them, like any extra forward. Layer names come from ``discriminator.named_modules()``;
    for LaMa's ``NLayerDiscriminator`` the blocks are ``model0``, ``model1``, ...: e.g.
    ``textural_layers=("model0", "model1", "model2"), semantic_layer="model3"`` (block outputs are the in-place
    LeakyReLU outputs, which are safe to tap). ``"auto"`` picks activations of a Sequential-like PatchGAN and
    needs ``discriminator=`` at construction. The semantic projection head (``projection=True``) is built at
    construction, so it needs ``feature_dim`` or ``discriminator=``; it goes to the **generator's** optimiser:
    :meth:`generator_parameters`.

    **Boundary checks** (switchable; also off under ``scatloss.set_value_checks(False)``): ``check_range``
    raises ``ValueError`` when ``real_batch`` has values below ``-0.01`` (``[-1, 1]`` images) or above ``1.01``;
    ``check_mask`` raises when ``fake_batch`` equals ``real_batch`` exactly on every pixel the mask calls a hole
    and differs where it calls pixels known (a valid mask, 1 = known). The mask check can only fire when
    ``fake_batch`` is the composite; with the raw prediction it never fires.

    Args:
        in_channels: image channels of the default segmenter.
        segmenter: a module ``(B, C, H, W) -> (B, 1, H, W)`` logits (default: ``UNetSegmenter(in_channels)``;
            ``H, W`` divisible by 16).
        kind: global adversarial form.
        weight: weight of the global generator term (LaMa's ``weight``; the discriminator term is unweighted).
        gp_coef: R1 coefficient (default 5 as LaMa's ``NonSaturatingWithR1``; LaMa's configs use 0.001; 0: no R1).
        mask_as_fake_target, allow_scale_mask, mask_scale_mode, extra_mask_weight_for_gen, use_unmasked_for_gen,
            use_unmasked_for_discr: LaMa's global-term options (above), with LaMa's defaults. ``mask_scale_mode``
            is ``"maxpool"`` (``F.adaptive_max_pool2d``) or a 2-D ``F.interpolate`` mode (``"nearest"``, LaMa's
            default, ``"nearest-exact"``, ``"bilinear"``, ``"bicubic"``, ``"area"``), applied only when the sizes
            differ, as LaMa's ``interpolate_mask``; ``allow_scale_mask=False`` (LaMa's default; its configs set
            ``True``) raises if the patch map is smaller than the mask. The two combinations LaMa asserts against
            raise ``ValueError``.
        lambda_scat: weight of SCAT's generator term (default: ``weight``).
        scat_kind, scat_region, scat_resample: SCAT options (``"hinge"``, ``"hole"`` as in the release, ``"area"``).
        discriminator: the host's discriminator, for the contrastive terms (not registered: its parameters stay
            the host's).
        textural_layers, semantic_layer, semantic_pool, feature_dim, projection, hidden_features, out_features:
            contrastive configuration (as :class:`scatloss.adapters.aotgan.SCATDiscriminator`).
        lambda_text, lambda_sem, temperature, normalize, negatives, fill, chunk_size, seed: contrastive weights and
            options (paper: 10, 1, 0.07).
        negatives_from: ``"local"`` (default) or ``"global"`` (the masks of every DDP rank; see
            :class:`~scatloss.SCATCriterion`).
        check_range, check_mask: boundary checks.

    Shape:
        - real_batch, fake_batch: ``(B, C, H, W)`` in ``[0, 1]``; mask: ``(B, 1, H, W)``, 1 = hole.
        - discr_real_pred, discr_fake_pred: ``(B, 1, h, w)`` patch logits.
        - each loss method returns ``(scalar, dict[str, scalar tensor])`` (metrics detached).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        segmenter: nn.Module | None = None,
        kind: Kind = "bce",
        weight: float = 1.0,
        gp_coef: float = 5.0,
        mask_as_fake_target: bool = False,
        allow_scale_mask: bool = False,
        mask_scale_mode: str = "nearest",
        extra_mask_weight_for_gen: float = 0.0,
        use_unmasked_for_gen: bool = True,
        use_unmasked_for_discr: bool = True,
        lambda_scat: float | None = None,
        scat_kind: Kind = "hinge",
        scat_region: Region = "hole",
        scat_resample: Resample = "area",
        discriminator: nn.Module | None = None,
        textural_layers: Sequence[str] | Literal["auto"] = (),
        semantic_layer: str | None = None,
        semantic_pool: Pool = "relu_sum",
        feature_dim: int | None = None,
        projection: bool = True,
        hidden_features: int = 256,
        out_features: int = 256,
        lambda_text: float = 10.0,
        lambda_sem: float = 1.0,
        temperature: float = 0.07,
        normalize: bool = True,
        negatives: Literal["batch"] | int = "batch",
        negatives_from: Literal["local", "global"] = "local",
        fill: float = 0.0,
        chunk_size: int = 8,
        seed: int = 0,
        check_range: bool = True,
        check_mask: bool = True,
    ) -> None:
        super().__init__()
        if segmenter is not None and not isinstance(segmenter, nn.Module):
            raise TypeError(f"segmenter: expected a torch.nn.Module or None, got {describe(segmenter)}")
        if discriminator is not None and not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator: expected a torch.nn.Module or None, got {describe(discriminator)}")
        self.kind = check_choice("kind", kind, KINDS)
        self.weight = _float("weight", weight)
        self.gp_coef = _float("gp_coef", gp_coef)
        self.mask_as_fake_target = bool(mask_as_fake_target)
        self.allow_scale_mask = bool(allow_scale_mask)
        self.mask_scale_mode = check_choice("mask_scale_mode", mask_scale_mode, MASK_SCALE_MODES)
        self.extra_mask_weight_for_gen = _float("extra_mask_weight_for_gen", extra_mask_weight_for_gen)
        self.use_unmasked_for_gen = bool(use_unmasked_for_gen)
        self.use_unmasked_for_discr = bool(use_unmasked_for_discr)
        # LaMa's NonSaturatingWithR1 asserts both rules; here they are ValueErrors.
        if self.use_unmasked_for_discr and not self.use_unmasked_for_gen:
            raise ValueError(
                "use_unmasked_for_gen: expected True when use_unmasked_for_discr=True (LaMa's rule: a discriminator "
                "trained on unmasked pixels implies a generator trained on them), got use_unmasked_for_gen=False"
            )
        if self.mask_as_fake_target and not self.use_unmasked_for_discr:
            raise ValueError(
                "use_unmasked_for_discr: expected True when mask_as_fake_target=True (LaMa's rule: labelling known "
                "pixels of a fake as real needs them in the discriminator loss), got use_unmasked_for_discr=False"
            )
        self.negatives_from = check_choice("negatives_from", negatives_from, ("local", "global"))
        self.lambda_scat = self.weight if lambda_scat is None else _float("lambda_scat", lambda_scat)
        self.lambda_text = _float("lambda_text", lambda_text)
        self.lambda_sem = _float("lambda_sem", lambda_sem)
        self.semantic_pool = check_choice("semantic_pool", semantic_pool, ("relu_sum", "mean", "flatten"))
        check_criterion_options(negatives, chunk_size, fill)
        self.negatives = negatives
        self.fill = fill
        self.chunk_size = chunk_size
        self.seed = seed
        self.check_range = bool(check_range)
        self.check_mask = bool(check_mask)

        auto_sem: str | None = None
        auto_dim: int | None = None
        if textural_layers == _AUTO or semantic_layer == _AUTO:
            if discriminator is None:
                raise ValueError(
                    "textural_layers/semantic_layer: 'auto' needs discriminator=... at construction to read its layers"
                )
            auto_text, auto_sem, auto_dim = default_layers(discriminator)
            if textural_layers == _AUTO:
                textural_layers = auto_text
            if semantic_layer == _AUTO:
                semantic_layer = auto_sem
        if isinstance(textural_layers, str) or not isinstance(textural_layers, Sequence):
            raise TypeError(
                f"textural_layers: expected 'auto' or a sequence of layer names, got {describe(textural_layers)}"
            )
        if semantic_layer is not None and not isinstance(semantic_layer, str):
            raise TypeError(f"semantic_layer: expected 'auto', a layer name or None, got {describe(semantic_layer)}")
        self.textural_layers: tuple[str, ...] = tuple(textural_layers)
        self.semantic_layer: str | None = semantic_layer

        self.feature_dim: int | None = None
        if semantic_layer is not None and projection:
            if feature_dim is not None:
                dim: int | None = feature_dim
            elif semantic_layer == auto_sem:
                dim = auto_dim
            elif discriminator is not None and self.semantic_pool != "flatten":
                dim = layer_channels(discriminator, semantic_layer)
            else:
                dim = None
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(
                    f"feature_dim: expected a positive int, the size of the pooled feature of {semantic_layer!r}, for "
                    f"the projection head (built now so that it can join the generator's optimiser), got {dim!r}; pass "
                    "feature_dim=..., or discriminator=... to infer it, or projection=False"
                )
            self.feature_dim = dim

        self.segmenter = segmenter if segmenter is not None else UNetSegmenter(in_channels)
        self.objective = InpaintingObjective(
            lambda_adv=self.lambda_scat,  # the criterion computes no global term: this weighs SCAT only
            lambda_text=self.lambda_text,
            lambda_sem=self.lambda_sem,
            lambda_rec=0.0,
            scat_kind=scat_kind,
            region=scat_region,
            resample=scat_resample,
            temperature=temperature,
            normalize=normalize,
            in_features=self.feature_dim,
            hidden_features=hidden_features,
            out_features=out_features,
        )
        # The host's discriminator is held, not registered: its parameters are the host's to optimise and save.
        # So is the cached criterion (assigning a Module attribute registers it).
        self._nets: dict[str, nn.Module | None] = {"D": discriminator}
        self._cache: dict[str, Any] = {"criterion": None}

    # --------------------------------------------------------------------------------------------------
    @property
    def uses_discriminator_features(self) -> bool:
        """Whether contrastive terms are configured (and the discriminator is tapped)."""
        return bool(self.textural_layers) or self.semantic_layer is not None

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """The segmenter's parameters: add them to LaMa's **discriminator** optimiser."""
        return self.segmenter.parameters()

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The semantic projection head's parameters (empty without one): add them to the **generator** optimiser."""
        return self.objective.parameters()

    def _bind(self, discriminator: Any) -> None:
        if self._nets["D"] is None and isinstance(discriminator, nn.Module):
            self._nets["D"] = discriminator

    def criterion(self) -> SCATCriterion:
        """The :class:`~scatloss.SCATCriterion` computing SCAT and the contrastive terms (built on first use)."""
        if self.uses_discriminator_features:
            d = self._nets["D"]
            if d is None:
                raise RuntimeError(
                    "SCATAdversarialLoss: the contrastive terms need the discriminator; pass discriminator=... at "
                    "construction or call pre_generator_step(..., discriminator=D) first (LaMa's trainer does)"
                )
        else:
            # Never run: with no feature layers the criterion only uses the segmenter, and the host's
            # discriminator stays untouched (not even frozen).
            d = self.segmenter
        crit: SCATCriterion | None = self._cache["criterion"]
        # Rebuilt when the discriminator or the segmenter was replaced (a stale criterion would keep training
        # the old segmenter while the optimiser holds the new one's parameters).
        if crit is None or crit.discriminator is not d or crit.segmenter is not self.segmenter:
            crit = SCATCriterion(
                d,
                segmenter=self.segmenter,
                textural_layers=self.textural_layers,
                semantic_layer=self.semantic_layer,
                global_output=None,  # the global term comes from the host's discriminator predictions
                semantic_pool=self.semantic_pool,  # type: ignore[arg-type]
                negatives=self.negatives,
                negatives_from=self.negatives_from,  # type: ignore[arg-type]
                seed=self.seed,
                chunk_size=self.chunk_size,
                fill=self.fill,
                objective=self.objective,
                freeze_discriminator=True,
            )
            self._cache["criterion"] = crit
        return crit

    # --------------------------------------------------------------------------------------------------
    def _check(self, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> None:
        check_float_tensor("real_batch", real, ndim=4)
        check_float_tensor("fake_batch", fake, ndim=4)
        if fake.shape != real.shape:
            raise ValueError(
                f"fake_batch: expected the shape of real_batch {tuple(real.shape)}, got {tuple(fake.shape)}"
            )
        checks = ValueChecks()  # every value check of the call, read back in one transfer
        check_hole(mask, batch=real.shape[0], name="mask", checks=checks)
        if mask.shape[-2:] != real.shape[-2:]:
            raise ValueError(
                f"mask: expected the spatial size of real_batch {tuple(real.shape[-2:])}, got {tuple(mask.shape[-2:])}"
            )
        if self.check_range:
            check_image_range("real_batch", real, expected=(0.0, 1.0), host="LaMa", checks=checks)
        if self.check_mask:
            check_hole_convention("mask", fake.detach(), real.detach(), mask, host="LaMa", checks=checks)
        checks.run()

    def _mask_at(self, mask: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """The mask at the patch map's size, as LaMa's ``interpolate_mask`` (unchanged when the sizes agree)."""
        size = (pred.shape[-2], pred.shape[-1])
        m = mask.to(pred.dtype)
        if tuple(mask.shape[-2:]) == size:
            return m
        if not self.allow_scale_mask:
            raise ValueError(
                f"mask: expected the size of the discriminator's patch map {size} (allow_scale_mask=False, LaMa's "
                f"default), got {tuple(mask.shape[-2:])}; pass allow_scale_mask=True to resample it (LaMa's configs do)"
            )
        if self.mask_scale_mode == "maxpool":
            return F.adaptive_max_pool2d(m, size)
        if self.mask_scale_mode == "max":
            return resample_hole(mask, size, "max").to(pred.dtype)
        return F.interpolate(m, size=size, mode=self.mask_scale_mode)

    @staticmethod
    def _check_pred(name: str, pred: Any, batch: int) -> torch.Tensor:
        if isinstance(pred, (tuple, list)):
            raise TypeError(
                f"{name}: expected the logits tensor, got a {type(pred).__name__}; LaMa discriminators return "
                "(logits, features): pass the logits"
            )
        check_float_tensor(name, pred, ndim=4)
        if pred.shape[0] != batch or pred.shape[1] != 1:  # would broadcast against the mask silently
            raise ValueError(
                f"{name}: expected a patch map of shape (B, 1, h, w) with B = {batch} like real_batch, got shape "
                f"{tuple(pred.shape)}"
            )
        return pred

    # --------------------------------------------------------------------------------------------------
    def pre_generator_step(
        self, real_batch: torch.Tensor, fake_batch: torch.Tensor, generator: nn.Module, discriminator: nn.Module
    ) -> None:
        """Remember ``discriminator`` (for the contrastive terms) if none was given; nothing else."""
        self._bind(discriminator)

    def pre_discriminator_step(
        self, real_batch: torch.Tensor, fake_batch: torch.Tensor, generator: nn.Module, discriminator: nn.Module
    ) -> None:
        """Remember ``discriminator``; with ``gp_coef > 0`` set ``real_batch.requires_grad = True`` (R1, as LaMa)."""
        self._bind(discriminator)
        if self.gp_coef > 0:
            real_batch.requires_grad = True

    def generator_loss(
        self,
        real_batch: torch.Tensor,
        fake_batch: torch.Tensor,
        discr_real_pred: torch.Tensor,
        discr_fake_pred: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generator loss ``weight * L_adv(G) + lambda_scat * L_SCAT(G) [+ lambda_text * L_text + lambda_sem * L_sem]``.

        Returns ``(loss, metrics)`` with metrics ``gen_adv_term``, ``scat_gen`` and, if configured,
        ``contra_text``, ``contra_sem`` (unweighted, detached).
        """
        self._check(real_batch, fake_batch, mask)
        fake_pred = self._check_pred("discr_fake_pred", discr_fake_pred, real_batch.shape[0])
        per_patch = _generator_term(fake_pred, self.kind)
        if (self.mask_as_fake_target and self.extra_mask_weight_for_gen > 0) or not self.use_unmasked_for_gen:
            m = self._mask_at(mask, fake_pred)
            if not self.use_unmasked_for_gen:
                per_patch = per_patch * m
            else:
                per_patch = per_patch * (1.0 + m * self.extra_mask_weight_for_gen)
        adv = per_patch.mean()
        with validated():  # checked once, in _check: the criterion skips its value checks
            terms = self.criterion().generator_step(fake_batch, real_batch.detach(), mask)
        loss = self.weight * adv + terms["total"]
        metrics = {"gen_adv_term": adv.detach(), "scat_gen": terms["scat"].detach()}
        if "text" in terms:
            metrics["contra_text"] = terms["text"].detach()
        if "sem" in terms:
            metrics["contra_sem"] = terms["sem"].detach()
        return loss, metrics

    def discriminator_loss(
        self,
        real_batch: torch.Tensor,
        fake_batch: torch.Tensor,
        discr_real_pred: torch.Tensor,
        discr_fake_pred: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator + segmenter loss ``L_adv(D) [+ gp_coef * R1] + L_SCAT(S)``.

        Returns ``(loss, metrics)`` with ``discr_real_out``, ``discr_fake_out``, ``discr_real_gp``, ``scat_seg``.
        """
        self._check(real_batch, fake_batch, mask)
        real_pred = self._check_pred("discr_real_pred", discr_real_pred, real_batch.shape[0])
        fake_pred = self._check_pred("discr_fake_pred", discr_fake_pred, real_batch.shape[0])
        real_loss = _real_term(real_pred, self.kind)
        fake_loss = _fake_term(fake_pred, self.kind)
        if self.mask_as_fake_target or not self.use_unmasked_for_discr:
            m = self._mask_at(mask, fake_pred)
            fake_loss = fake_loss * m
            if self.mask_as_fake_target:
                fake_loss = fake_loss + (1.0 - m) * _real_term(fake_pred, self.kind)
        gp = real_pred.new_zeros(())
        if self.gp_coef > 0 and torch.is_grad_enabled():
            if not real_batch.requires_grad:
                raise ValueError(
                    "real_batch: expected requires_grad=True for the R1 penalty (gp_coef > 0), got False; call "
                    "pre_discriminator_step(real_batch, ...) before running the discriminator on it (LaMa does)"
                )
            (grad_real,) = torch.autograd.grad(real_pred.sum(), real_batch, create_graph=True)
            gp = grad_real.flatten(1).norm(2, dim=1).pow(2).mean() * self.gp_coef
            real_batch.requires_grad = False  # as LaMa's make_r1_gp
        adv = (real_loss + fake_loss).mean() + gp
        with validated():  # checked once, in _check: the criterion skips its value checks
            scat = self.criterion().discriminator_step(fake_batch.detach(), real_batch.detach(), mask)["scat"]
        metrics = {
            "discr_real_out": real_pred.detach().mean(),
            "discr_fake_out": fake_pred.detach().mean(),
            "discr_real_gp": gp.detach(),
            "scat_seg": scat.detach(),
        }
        return adv + scat, metrics

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, weight={self.weight}, gp_coef={self.gp_coef}, mask_as_fake_target="
            f"{self.mask_as_fake_target}, lambda_scat={self.lambda_scat}, textural_layers={self.textural_layers}, "
            f"semantic_layer={self.semantic_layer!r}"
        )
