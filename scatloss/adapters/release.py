r"""A drop-in for the loss module of the authors' released trainer (zzw-zjgsu/Generative-Image-Inpainting).

The release's trainer (``src/trainer/trainer.py``) uses its loss module (``src/loss/loss.py``) through three
names, as read from the repository::

    from loss import loss as loss_module
    self.rec_loss_func = {key: getattr(loss_module, key)() for key, val in args.rec_loss.items()}   # "10*L1"
    self.dualadv_loss = loss_module.dualadv(args)
    self.contrastive_loss = getattr(loss_module, 'Contrastive')(args, self.netD, args.no_mlp)       # before DDP
    ...  # optimG gets netG's and contrastive_loss.mlp's parameters; under DDP the trainer wraps mlp in DDP
    D_losses["global_advd"], D_losses["scat_advd"] = self.dualadv_loss.D(self.netD, comp_img, images, 1 - masks)
    ...  # optimD: zero_grad, sum(D_losses).backward(), step        (the D step: not weighted by adv_weight)
    G_losses["global_advg"], G_losses["scat_advg"] = self.dualadv_loss.G(self.netD, comp_img, 1 - masks)
    textural_loss, semantic_loss = self.contrastive_loss(images_masked, comp_img, images, masks, 5)

This module offers the same three names, so the retrofit is **one line** in the trainer::

    -from loss import loss as loss_module
    +from scatloss.adapters import release as loss_module

and computes every term exactly as the release does (checked in float64 against a stand-in written from the
release's code: every term and the generator's and head's gradients to 1e-9 relative), with less work:

* the release runs the discriminator five times per generator step, all with autograd (``dualadv.G`` on the
  composite, then ``Contrastive`` on the composite again, the ground truth, the corrupted input and the ``B*B``
  negatives). Here ``dualadv.G`` runs the composite once, with D's parameters frozen, and keeps its features;
  ``Contrastive`` reuses them and runs the other passes without autograd, with early exit after the bottleneck
  and the negatives in chunks (:class:`~scatloss.SCATCriterion`). The generator's and head's gradients are the
  same; D's gradients from the generator step, which the release computes and then discards (``optimD.zero_grad()``
  runs before the next D backward), are not computed.
* the release asserts ``num_feat_layers <= batch size`` (it compares with the length of a ``(B, 1024)`` tensor),
  so it fails for batches under 5; here any batch size works.
* in train mode each extra forward of the release advances spectral norm's power iteration; here the
  generator step advances it once (the autograd pass), so runs in train mode diverge slowly from the release's.

Conventions, as the release: images in ``[-1, 1]``; ``Contrastive`` gets hole masks (1 = missing), ``dualadv``
gets **valid** masks (``1 - masks``); holes of the corrupted inputs are filled with 1. Loss forms come from
``args.globalgan_type`` / ``args.SCAT_type`` (``hingegan`` | ``nsgan`` | ``lsgan``); the semantic term uses the
release's normalisation ``x / (|x| + 1e-7)``, ``t = 1`` and the head ``Linear(1024, 256) -> ReLU -> Linear(256,
256)`` initialised orthogonal with gain ``sqrt(2)`` (:meth:`scatloss.InpaintingObjective.release`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import functional as SF
from .._validation import check_float_tensor, check_hole, describe, validated
from ..criterion import SCATCriterion
from ..losses import InpaintingObjective, init_projection_orthogonal
from ..utils import frozen_parameters
from ._common import DDP

__all__ = ["L1", "Contrastive", "ReleaseAdversarial", "ReleaseContrastive", "dualadv", "release_layers"]

_KINDS = {"hingegan": "hinge", "nsgan": "bce", "lsgan": "ls"}


def _kind(name: str, value: Any) -> str:
    if value not in _KINDS:
        raise ValueError(f"args.{name}: expected one of {sorted(_KINDS)} (the release's names), got {value!r}")
    return _KINDS[value]


def _inner(netD: Any) -> nn.Module:
    module = netD.module if isinstance(netD, DDP) else netD
    if not isinstance(module, nn.Module):
        raise TypeError(f"netD: expected the release's discriminator (an nn.Module), got {describe(netD)}")
    return module


def release_layers(netD: nn.Module, num_feat_layers: int = 5) -> tuple[tuple[str, ...], str]:
    """Tap names for the release's U-Net discriminators: ``(textural layers, semantic layer)``.

    The release reads ``residual_features[1 : num_feat_layers]``, the outputs of ``blocks[0 .. num_feat_layers-2]``
    (each block a ``ModuleList`` whose last module's output is the block's), and the ReLU-sum-pooled bottleneck
    ``h_``, the input of ``linear_middle``.
    """
    blocks = getattr(netD, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not hasattr(netD, "linear_middle"):
        raise ValueError(
            f"netD: expected the release's UnetDiscriminator / ResUnetDiscriminator layout (a 'blocks' ModuleList and "
            f"'linear_middle'), got {type(netD).__name__}; pass textural_layers=... and semantic_layer=..."
        )
    names = []
    for i in range(num_feat_layers - 1):
        block = blocks[i]
        names.append(f"blocks.{i}.{len(block) - 1}" if isinstance(block, nn.ModuleList) else f"blocks.{i}")
    return tuple(names), "linear_middle:input"


class _Shared:
    """Per-discriminator state shared by ``dualadv`` and ``Contrastive``: the criterion and the anchor pass."""

    def __init__(self, netD: nn.Module, textural: Sequence[str], semantic: str, chunk_size: int) -> None:
        self.objective = InpaintingObjective.release(in_features=None)
        self.criterion = SCATCriterion(
            netD,
            textural_layers=textural,
            semantic_layer=semantic,
            global_output=2,
            pixel_output=3,
            negatives="batch",
            fill=1.0,
            chunk_size=chunk_size,
            objective=self.objective,
        )
        self.anchor: tuple[weakref.ref[torch.Tensor], dict[str, torch.Tensor]] | None = None


_SHARED: weakref.WeakKeyDictionary[nn.Module, _Shared] = weakref.WeakKeyDictionary()


def _shared(netD: nn.Module, num_feat_layers: int | None = None, chunk_size: int | None = None) -> _Shared:
    """The state of ``netD``, built (or rebuilt for another layer count) on demand. ``None`` keeps the state's
    current value (5 layers, chunks of 8 for a new state): ``dualadv.G`` passes neither, so the options of
    ``Contrastive`` stand whichever of the two runs first."""
    state = _SHARED.get(netD)
    if state is not None:
        num_feat_layers = len(state.criterion.textural_layers) + 1 if num_feat_layers is None else num_feat_layers
        chunk_size = state.criterion.chunk_size if chunk_size is None else chunk_size
    num_feat_layers = 5 if num_feat_layers is None else num_feat_layers
    chunk_size = 8 if chunk_size is None else chunk_size
    if state is None or len(state.criterion.textural_layers) != num_feat_layers - 1:
        textural, semantic = release_layers(netD, num_feat_layers)
        state = _Shared(netD, textural, semantic, chunk_size)
        _SHARED[netD] = state
    else:
        state.criterion.chunk_size = chunk_size
    return state


class L1:
    """``L1()(x, y)``: mean absolute error (the release's reconstruction loss, built by name from ``args.rec_loss``)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return SF.reconstruction_loss(x, y)


class ReleaseAdversarial:
    """The release's ``dualadv(args)``: global adversarial and SCAT terms, ``D(...)`` and ``G(...)``.

    ``D(netD, fake, real, valid) -> (global, scat)`` runs the (possibly DDP-wrapped) discriminator on
    ``fake.detach()`` and ``real`` as the release does; ``G(netD, fake, valid) -> (global, scat)`` runs it once on
    the composite with D's parameters frozen (on the module inside a DDP wrapper: this pass must not enter DDP's
    gradient bookkeeping, since it gives D no gradient) and keeps the composite's features for
    :class:`ReleaseContrastive`. ``valid`` masks are 1 on known pixels (the trainer passes ``1 - masks``).
    """

    def __init__(self, args: Any) -> None:
        self.global_kind = _kind("globalgan_type", getattr(args, "globalgan_type", "hingegan"))
        self.scat_kind = _kind("SCAT_type", getattr(args, "SCAT_type", "hingegan"))

    def D(
        self, netD: Any, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N802
        check_float_tensor("fake", fake, ndim=4)
        check_float_tensor("real", real, ndim=4)
        hole = 1 - check_hole(masks, batch=real.shape[0], name="masks (valid, 1 = known)")
        _, _, d_fake_global, d_fake_pixel = netD(fake.detach())
        _, _, d_real_global, d_real_pixel = netD(real)
        with validated():  # the mask was checked above: one device read per call
            adv = SF.adversarial_discriminator_loss(d_fake_global, d_real_global, kind=self.global_kind)  # type: ignore[arg-type]
            scat = SF.scat_segmenter_loss(d_fake_pixel, d_real_pixel, hole, kind=self.scat_kind)  # type: ignore[arg-type]
        return adv, scat

    def G(self, netD: Any, fake: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N802
        check_float_tensor("fake", fake, ndim=4)
        hole = 1 - check_hole(masks, batch=fake.shape[0], name="masks (valid, 1 = known)")
        inner = _inner(netD)
        state = _shared(inner)
        tap = state.criterion._tap_full
        with frozen_parameters(inner):
            if tap is not None:
                output, feats = tap(fake)
                state.anchor = (weakref.ref(fake), feats)
            else:  # pragma: no cover - the release layout always has taps
                output = inner(fake)
        _, _, g_global, g_pixel = output
        with validated():  # the mask was checked above: one device read per call
            adv = SF.adversarial_generator_loss(g_global, kind=self.global_kind)  # type: ignore[arg-type]
            scat = SF.scat_generator_loss(g_pixel, hole, kind=self.scat_kind, region="hole")  # type: ignore[arg-type]
        return adv, scat


class ReleaseContrastive(nn.Module):
    """The release's ``Contrastive(args, netD, no_mlp)``: textural and semantic contrastive terms.

    ``textural, semantic = loss(input, predict_result, gt, mask, num_feat_layers)`` with ``input`` the corrupted
    image (holes filled with 1), ``predict_result`` the composite, ``gt`` the ground truth and ``mask`` the hole
    mask (1 = missing). ``self.mlp`` is the projection head (the trainer hands its parameters to optimG and, under
    DDP, wraps it in DDP; it is used through whatever ``self.mlp`` holds). ``no_mlp=True``: no head.

    Args:
        args: the trainer's options (only ``args`` is read for nothing here; kept for the release's signature).
        netD: the discriminator (the plain module: the trainer builds this loss before wrapping D in DDP).
        no_mlp, input_dim, mlp_dim, temp: as the release (``temp`` is stored and, as in the release, not applied).
        chunk_size: images per autograd-free negative pass.
    """

    def __init__(
        self,
        args: Any,
        netD: nn.Module,
        no_mlp: bool = False,
        input_dim: int = 1024,
        mlp_dim: int = 256,
        temp: float = 0.07,
        *,
        chunk_size: int = 8,
    ) -> None:
        super().__init__()
        if not isinstance(netD, nn.Module):
            raise TypeError(f"netD: expected the release's discriminator (an nn.Module), got {describe(netD)}")
        self._nets = {"D": _inner(netD)}
        self.no_mlp = bool(no_mlp)
        self.input_dim, self.mlp_dim, self.temp = int(input_dim), int(mlp_dim), float(temp)
        self.chunk_size = chunk_size
        self.mlp: nn.Module | None = None
        if not self.no_mlp:
            head = nn.Sequential(nn.Linear(input_dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, mlp_dim))
            init_projection_orthogonal(head)
            ref = next(iter(self._nets["D"].parameters()), torch.empty(0))
            self.mlp = head.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)

    def forward(
        self,
        input: torch.Tensor,  # noqa: A002 - the release's name
        predict_result: torch.Tensor,
        gt: torch.Tensor,
        mask: torch.Tensor,
        num_feat_layers: int = 5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(textural, semantic)``, unweighted (the trainer multiplies by ``text_weight`` and ``sem_weight``)."""
        for name, x in (("input", input), ("predict_result", predict_result), ("gt", gt)):
            check_float_tensor(name, x, ndim=4)
        if isinstance(num_feat_layers, bool) or not isinstance(num_feat_layers, int) or num_feat_layers < 2:
            raise ValueError(f"num_feat_layers: expected an int >= 2, got {num_feat_layers!r}")
        hole = check_hole(mask, batch=gt.shape[0], name="mask")
        netD = self._nets["D"]
        state = _shared(netD, num_feat_layers, self.chunk_size)
        crit = state.criterion
        cached = state.anchor
        state.anchor = None
        if cached is not None and cached[0]() is predict_result:
            anchor = cached[1]
        else:  # dualadv.G was not called on this composite: run the anchor pass here
            with frozen_parameters(netD):
                _, anchor = crit._tap_full(predict_result)  # type: ignore[misc]
        with validated():  # the mask was checked above: corrupting the negatives reads nothing back
            pos, neg, sem_negs = crit._extract_fast(gt, input, hole)
        layers = crit.textural_layers
        textural = state.objective.textural(
            [anchor[k] for k in layers], [pos[k] for k in layers], [neg[k] for k in layers]
        )
        sem = crit.semantic_layer or ""
        a, p = crit._pool(anchor[sem]), crit._pool(pos[sem])
        n = sem_negs if sem_negs is not None else crit._pool(neg[sem]).unsqueeze(1)
        if self.mlp is not None:
            b, m = n.shape[0], n.shape[1]
            projected = self.mlp(torch.cat([a, p, n.reshape(b * m, -1)]))  # one head pass: rows are independent
            a, p, n = projected[:b], projected[b : 2 * b], projected[2 * b :].view(b, m, -1)
        semantic = state.objective.semantic(a, p, n)
        return textural, semantic


dualadv = ReleaseAdversarial
"""The release's name, so that ``loss_module.dualadv(args)`` works unchanged."""
Contrastive = ReleaseContrastive
"""The release's name, so that ``getattr(loss_module, 'Contrastive')(args, netD, no_mlp)`` works unchanged."""
