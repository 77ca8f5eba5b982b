r"""SCAT and the contrastive losses for an AOT-GAN trainer (researchmm/AOT-GAN-for-Inpainting), no host import.

AOT-GAN's trainer (``src/trainer/trainer.py``, checked against the repository; the lines that matter)::

    self.adv_loss = getattr(loss_module, args.gan_type)()            # default "smgan"
    self.netG = net.InpaintGenerator(args).cuda()
    self.optimG = torch.optim.Adam(self.netG.parameters(), lr=args.lrg, betas=(args.beta1, args.beta2))
    self.netD = net.Discriminator().cuda()                           # SN-PatchGAN, LeakyReLU(inplace=True)
    self.optimD = torch.optim.Adam(self.netD.parameters(), lr=args.lrd, betas=(args.beta1, args.beta2))
    self.load()                                                      # every load in try/except Exception: pass
    if args.distributed:                                             # train.py: True whenever > 1 GPU is visible
        self.netG = DDP(self.netG, device_ids=[args.local_rank], output_device=[args.local_rank])
        self.netD = DDP(self.netD, device_ids=[args.local_rank], output_device=[args.local_rank])
    ...
    images_masked = (images * (1 - masks).float()) + masks           # hole masks (1 = missing), [-1, 1]
    pred_img = self.netG(images_masked, masks)
    comp_img = (1 - masks) * images + masks * pred_img
    losses = {name: weight * rec_loss(pred_img, images) ...}         # default 1*L1 + 250*Style + 0.1*Perceptual
    dis_loss, gen_loss = self.adv_loss(self.netD, comp_img, images, masks)
    losses["advg"] = gen_loss * self.args.adv_weight                 # default adv_weight 0.01
    self.optimG.zero_grad()
    self.optimD.zero_grad()
    sum(losses.values()).backward()
    losses["advd"] = dis_loss
    dis_loss.backward()
    self.optimG.step()
    self.optimD.step()

Both backward passes run after ``optimD.zero_grad()``, so any gradient that ``gen_loss`` sends into D's
parameters is *added* to D's update. The adapter builds ``gen_loss`` with D's and the segmenter's parameters
frozen (no parameter graph; :class:`~scatloss.SCATCriterion`'s ``freeze_discriminator``), so D's and S's
gradients are exactly those of ``dis_loss``.

Retrofit (four changed or added lines)::

    from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss           # new import
    self.netD = SCATDiscriminator(net.Discriminator())                           # was: net.Discriminator()
    self.optimG.add_param_group({"params": list(self.netD.generator_parameters())})   # after optimD is built
    self.adv_loss = SCATGANLoss(host_adv_weight=args.adv_weight)                 # was: getattr(...)()

``optimD = Adam(self.netD.parameters())`` is unchanged and now also trains the segmenter. Under
``distributed=True`` the host's own DDP lines wrap the :class:`SCATDiscriminator`; :class:`SCATGANLoss` then runs
its whole step inside that wrapper's forward, so DDP all-reduces D's, S's and the head's gradients.

Weights. The paper's generator objective is :math:`\lambda_{adv}(\mathcal{L}_{adv} + \mathcal{L}_{SCAT}) +
\lambda_{text}\mathcal{L}_{text} + \lambda_{sem}\mathcal{L}_{sem} + \lambda_{rec}\mathcal{L}_{rec}` (Eq. 8) with
10 : 1 : 10 for text : sem : rec. A host has its own reconstruction weight ``w_rec`` (AOT-GAN's L1: 1), so the
contrastive terms keep the paper's ratio to it: the generator minimises ``w_adv (L_adv + L_SCAT) + (w_rec /
lambda_rec) (lambda_text L_text + lambda_sem L_sem) + host losses`` (AOT-GAN: ``1.0 L_text + 0.1 L_sem`` next
to ``1 * L1``). ``gen_loss`` carries the contrastive part divided by ``host_adv_weight``, because the trainer
multiplies ``gen_loss`` by ``args.adv_weight``: pass ``host_adv_weight=args.adv_weight``.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .._validation import ValueChecks, check_choice, check_float_tensor, check_hole, check_sizes, describe, validated
from ..criterion import SCATCriterion
from ..functional import KINDS, REGIONS, Kind, Region
from ..losses import InpaintingObjective, _check_weight
from ..masks import RESAMPLE_MODES, Resample
from ..nets import UNetSegmenter
from ._common import (
    STEP_KEYWORD,
    broadcast_parameters,
    check_criterion_options,
    check_hole_convention,
    check_image_range,
    default_layers,
    image_channels,
    layer_channels,
    module_device,
    unwrap,
)

__all__ = ["SCATDiscriminator", "SCATGANLoss"]

Pool = Literal["relu_sum", "mean", "flatten"]
_AUTO = "auto"
_WRAPPERS: tuple[type, ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)


class SCATDiscriminator(nn.Module):
    """An AOT-GAN discriminator with a SCAT segmenter and a semantic projection head attached.

    The host keeps using it as its discriminator: ``netD(x)`` returns the wrapped discriminator's output
    unchanged. :meth:`parameters` yields the discriminator's **and the segmenter's** parameters, so the
    host's ``optimD = Adam(netD.parameters())`` trains both; the projection head of the semantic loss is
    left out of :meth:`parameters` on purpose and belongs to the **generator's** optimiser
    (:meth:`generator_parameters`), as in the authors' release. All three are submodules, so ``.cuda()`` /
    ``.to()`` move them and ``state_dict()`` saves them (keys ``netD.*``, ``segmenter.*``, ``projection.*``).
    :meth:`load_state_dict` also takes the host's plain discriminator state dict (a pre-retrofit checkpoint).

    Feature layers (names from ``netD.named_modules()``; see :class:`~scatloss.taps.FeatureTap`):

    * ``textural_layers="auto"``: the activation outputs of the first conv blocks, all but the last (at most
      four). For AOT-GAN's discriminator (``conv.0`` conv, ``conv.1`` LeakyReLU, ..., ``conv.8`` logit conv)
      that is ``("conv.1", "conv.3", "conv.5")``.
    * ``semantic_layer="auto"``: the activation of the last conv block (``"conv.7"``, 512 channels in
      AOT-GAN), pooled by ``semantic_pool`` (ReLU then sum over H, W, as the release pools its bottleneck).

    Auto-detection walks ``named_modules()`` in order and needs activation *modules* after ``nn.Conv2d`` layers
    (a Sequential-like PatchGAN); otherwise pass names. Tap activations rather than convolutions: AOT-GAN's
    ``LeakyReLU(inplace=True)`` overwrites a convolution's output, which :class:`~scatloss.taps.FeatureTap`
    detects and refuses at call time. Pass ``()`` / ``None`` to drop the textural / semantic term.

    Args:
        netD: the host's discriminator, unwrapped (the host's DDP goes around the ``SCATDiscriminator``).
        segmenter: the SCAT segmenter ``S``, any module ``(B, C, H, W) -> (B, 1, H, W)`` logits; default a
            :class:`scatloss.nets.UNetSegmenter` for ``in_channels`` channels (spectral-normed, base 32, depth 4:
            ``H, W`` divisible by 16), created on ``netD``'s device.
        in_channels: image channels for the default segmenter (default: ``in_channels`` of netD's first conv).
        textural_layers: ``"auto"``, a sequence of layer names, or ``()``.
        semantic_layer: ``"auto"``, a layer name, or ``None``.
        semantic_pool: ``"relu_sum"`` (release) | ``"mean"`` | ``"flatten"`` for a feature map.
        feature_dim: size of the pooled semantic vector (default: inferred from the convolution feeding the
            semantic layer; required for ``"flatten"``).
        projection: add the release's trainable projection head ``Linear(feature_dim, hidden) -> ReLU ->
            Linear(hidden, out)`` (``False``: InfoNCE on the pooled features directly, no head).
        hidden_features, out_features: head sizes (release: 256, 256).

    Raises:
        TypeError: ``netD`` / ``segmenter`` not an ``nn.Module``, or ``netD`` DDP/DataParallel-wrapped.
        ValueError: layers cannot be auto-detected, a named layer does not exist, ``feature_dim`` cannot be
            inferred, ``hidden_features`` / ``out_features`` not a positive int.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> D = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
        ...                   nn.Conv2d(8, 16, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(16, 1, 3, 1, 1))
        >>> scat_d = SCATDiscriminator(D, segmenter=nn.Conv2d(3, 1, 3, padding=1))
        >>> scat_d.textural_layers, scat_d.semantic_layer, scat_d.feature_dim
        (('1',), '3', 16)
        >>> tuple(scat_d(torch.randn(2, 3, 16, 16)).shape)          # netD's output, unchanged
        (2, 1, 4, 4)
        >>> len(list(scat_d.generator_parameters()))                 # the head's two Linear layers
        4
    """

    def __init__(
        self,
        netD: nn.Module,
        segmenter: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        textural_layers: Sequence[str] | Literal["auto"] = _AUTO,
        semantic_layer: str | None = _AUTO,
        semantic_pool: Pool = "relu_sum",
        feature_dim: int | None = None,
        projection: bool = True,
        hidden_features: int = 256,
        out_features: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(netD, nn.Module):
            raise TypeError(f"netD: expected the host's discriminator, a torch.nn.Module, got {describe(netD)}")
        if isinstance(netD, _WRAPPERS):
            raise TypeError(
                f"netD: expected an unwrapped discriminator, got a {type(netD).__name__}; wrap the plain module "
                "(SCATDiscriminator(netD.module)) and put DDP around the SCATDiscriminator, as AOT-GAN's trainer does"
            )
        if segmenter is not None and not isinstance(segmenter, nn.Module):
            raise TypeError(f"segmenter: expected a torch.nn.Module or None, got {describe(segmenter)}")
        self.semantic_pool = check_choice("semantic_pool", semantic_pool, ("relu_sum", "mean", "flatten"))
        check_sizes(
            ("hidden_features", hidden_features), ("out_features", out_features), what=" (a projection head size)"
        )

        auto_text = auto_sem = None
        auto_dim: int | None = None
        if textural_layers == _AUTO or semantic_layer == _AUTO:
            auto_text, auto_sem, auto_dim = default_layers(netD)
        if textural_layers == _AUTO:
            textural_layers = auto_text  # type: ignore[assignment]
        elif isinstance(textural_layers, str) or not isinstance(textural_layers, Sequence):
            raise TypeError(
                f"textural_layers: expected 'auto' or a sequence of layer names, got {describe(textural_layers)}"
            )
        if semantic_layer == _AUTO:
            semantic_layer = auto_sem
        elif semantic_layer is not None and not isinstance(semantic_layer, str):
            raise TypeError(f"semantic_layer: expected 'auto', a layer name or None, got {describe(semantic_layer)}")
        self.textural_layers: tuple[str, ...] = tuple(textural_layers)  # type: ignore[arg-type]
        self.semantic_layer: str | None = semantic_layer
        names = dict(netD.named_modules())
        for name in (*self.textural_layers, *([semantic_layer] if semantic_layer else [])):
            base = name[: -len(":input")] if name.endswith(":input") else name
            if base not in names:
                raise ValueError(f"layers: expected names from netD.named_modules(), got unknown layer {name!r}")

        self.feature_dim: int | None = None
        if semantic_layer is not None:
            if feature_dim is not None:
                dim: int | None = feature_dim
            elif self.semantic_pool == "flatten":
                dim = None
            elif semantic_layer == auto_sem:
                dim = auto_dim
            else:
                dim = layer_channels(netD, semantic_layer)
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(
                    f"feature_dim: expected a positive int (the size of the pooled semantic feature of "
                    f"{semantic_layer!r}), got {dim!r}; it could not be inferred, pass feature_dim=..."
                )
            self.feature_dim = dim

        channels = in_channels if in_channels is not None else image_channels(netD)
        device = module_device(netD)
        self.netD = netD
        if segmenter is None:
            if channels is None:
                raise ValueError(
                    "in_channels: expected the image channel count (netD has no nn.Conv2d to read it from)"
                )
            segmenter = UNetSegmenter(channels)
            if device is not None:
                segmenter = segmenter.to(device)
        self.segmenter = segmenter
        self.projection: nn.Module | None = None
        self._head_sizes = (int(hidden_features), int(out_features))
        if self.feature_dim is not None and projection:
            head = nn.Sequential(
                nn.Linear(self.feature_dim, hidden_features), nn.ReLU(), nn.Linear(hidden_features, out_features)
            )
            self.projection = head.to(device) if device is not None else head

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``netD(*args, **kwargs)``, unchanged (the host's discriminator calls keep working).

        :class:`SCATGANLoss` runs its whole step through this method when the module is
        ``DistributedDataParallel``-wrapped (a private keyword carries the step), so that DDP sees one forward
        that uses D, S and the head, and all-reduces their gradients.
        """
        step = kwargs.pop(STEP_KEYWORD, None)
        if step is not None:
            return step(self, *args, **kwargs)
        return self.netD(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load either layout: this module's (``netD.*``, ``segmenter.*``, ``projection.*``) or the host's plain D.

        A plain host-discriminator state dict (a checkpoint from before the retrofit, e.g. AOT-GAN's ``D*.pt``) is
        loaded into ``netD`` (``strict`` applies to it); the segmenter and the projection head keep their current
        (initial) values, and a ``UserWarning`` names them. So the host's own ``load()`` resumes a pre-retrofit run.

        Raises:
            TypeError: ``state_dict`` is not a mapping.
            ValueError: the keys fit neither layout (the message lists what arrived and what was expected).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a mapping of tensors, got {describe(state_dict)}")
        keys = list(state_dict)
        ours = ("netD.", "segmenter.", "projection.")
        if any(k.startswith(ours) for k in keys):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        host_keys = set(self.netD.state_dict())
        if keys and (set(keys) <= host_keys if strict else bool(set(keys) & host_keys)):
            if strict and set(keys) != host_keys:
                missing = sorted(host_keys - set(keys))
                raise ValueError(
                    f"state_dict: a plain discriminator state dict is missing {len(missing)} of netD's keys "
                    f"({missing[:4]}...); pass strict=False to load it partially"
                )
            result = self.netD.load_state_dict(state_dict, strict=strict, assign=assign)
            left = ["segmenter"] + (["projection"] if self.projection is not None else [])
            counts = ", ".join(f"{n} ({sum(1 for _ in getattr(self, n).state_dict())} tensors)" for n in left)
            warnings.warn(
                "SCATDiscriminator.load_state_dict: loaded a plain discriminator state dict (the layout from before "
                f"the retrofit) into netD; {counts} keep their initial values",
                UserWarning,
                stacklevel=2,
            )
            return result
        unexpected = sorted(set(keys) - host_keys)
        prefix = (
            " (keys start with 'module.': save the unwrapped module, or strip the prefix)"
            if keys and all(k.startswith("module.") for k in keys)
            else ""
        )
        raise ValueError(
            "state_dict: expected the keys of a SCATDiscriminator (netD.*, segmenter.*, projection.*) or of the "
            f"wrapped {type(self.netD).__name__} ({sorted(host_keys)[:3]}...), got {len(keys)} keys of which "
            f"{len(unexpected)} fit neither, e.g. {unexpected[:4]}{prefix}"
        )

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """Discriminator and segmenter parameters; the projection head's are left out (they are the generator's)."""
        head = {id(p) for p in self.projection.parameters()} if self.projection is not None else set()
        for name, p in super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate):
            if id(p) not in head:
                yield name, p

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """Same as :meth:`parameters`: netD's and the segmenter's, for the discriminator's optimiser."""
        return self.parameters()

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The projection head's parameters, for the **generator's** optimiser (empty without a head)."""
        if self.projection is None:
            return iter(())
        return self.projection.parameters()

    def extra_repr(self) -> str:
        return (
            f"textural_layers={self.textural_layers}, semantic_layer={self.semantic_layer!r}, "
            f"semantic_pool={self.semantic_pool!r}, feature_dim={self.feature_dim}"
        )


class SCATGANLoss(nn.Module):
    r"""AOT-GAN's adversarial-loss protocol with SCAT and both contrastive losses.

    ``dis_loss, gen_loss = loss(netD, fake, real, masks)``, as AOT-GAN's trainer calls its ``adv_loss``.

    ``netD`` must be a :class:`SCATDiscriminator`. Per call (the corrupted input :math:`\tilde x` = ``real * (1 -
    masks) + fill * masks`` and the semantic negatives are built inside, holes filled with ``fill = 1``):

    * ``dis_loss`` = :math:`\mathcal{L}_{adv}(D)` (Eq. 6 on netD's patch logits, every patch counted) +
      :math:`\mathcal{L}_{SCAT}(S)` (Eq. 1), on ``fake.detach()`` and ``real``. Backward reaches D and S only.
    * ``gen_loss`` = :math:`\mathcal{L}_{adv}(G) + \mathcal{L}_{SCAT}(G) + (\lambda_{text}\mathcal{L}_{text} +
      \lambda_{sem}\mathcal{L}_{sem}) / w_{host}`, with gradient to ``fake`` (hence G) and to the projection head,
      and **none** to D's or S's parameters (they are frozen while its graph is built), so the host's order
      (generator backward, then ``dis_loss.backward()``, both after ``optimD.zero_grad()``) leaves D's update
      equal to ``dis_loss``'s gradient. No reconstruction term: the host already has its L1.

    The host multiplies ``gen_loss`` by ``args.adv_weight``; pass the same value as ``host_adv_weight``. The
    contrastive terms then enter the generator's total as ``(host_rec_weight / lambda_rec) * (lambda_text * L_text
    + lambda_sem * L_sem)``: the paper's ratio to its reconstruction weight, carried over to the host's (module
    docstring). This replaces AOT-GAN's ``smgan``
    loss (least squares against a Gaussian-blurred mask) by the paper's choice, hinge on every patch for the
    global term, plus SCAT; ``kind="ls"`` is least squares against plain 0/1 targets, not smgan.

    ``fake`` is taken as the composite (holes from G, the rest from ``real``); the criterion recomposites it as
    ``masks * fake + (1 - masks) * real``, which is the identity for binary masks (AOT-GAN's).

    Boundary checks (each one device synchronisation; also off under ``scatloss.set_value_checks(False)``):

    * ``check_range``: ``real`` must look like ``[-1, 1]`` images: a batch with no negative value at all, or with
      values above ``1.01``, raises ``ValueError`` (a batch of only bright images would trip it: switch it off).
    * ``check_mask``: a valid mask (1 = known) passed for the hole mask raises ``ValueError``: detected because
      ``fake`` equals ``real`` exactly on every pixel that mask calls a hole and differs where it calls pixels
      known. A correct composite under a correct hole mask can never trip it.

    **DistributedDataParallel.** ``netD`` may be a ``DistributedDataParallel``-wrapped :class:`SCATDiscriminator`
    (AOT-GAN's ``distributed=True`` path). The whole step (D step and generator terms) then runs as one forward
    of the wrapper, so DDP all-reduces the gradients of D, S and the head (the head, which DDP's construction does
    not broadcast because :meth:`SCATDiscriminator.parameters` leaves it out, is broadcast from rank 0 on the
    first call). Per-sample terms then equal one process on the concatenated batch; the textural term (a ratio
    of batch means) and the semantic term with ``negatives_from="local"`` are computed per rank.
    ``DataParallel`` is refused (``TypeError``).

    Args:
        host_adv_weight: the weight your trainer multiplies ``gen_loss`` by (AOT-GAN: ``args.adv_weight``).
        host_rec_weight: your trainer's reconstruction (L1) weight (AOT-GAN: 1).
        lambda_text, lambda_sem, lambda_rec: the paper's weights of Eq. 3, Eq. 4 and Eq. 7 (10, 1, 10); only their
            ratios matter here.
        kind: global adversarial form, ``"hinge"`` (paper) | ``"bce"`` | ``"ls"``.
        scat_kind: SCAT form (default: ``kind``).
        region: SCAT generator term over ``"hole"`` pixels (release, default) or ``"all"`` (Eq. 2).
        resample: how a hole mask is brought to a smaller logit map (``"area"`` | ``"nearest"`` | ``"max"``).
        temperature, normalize: InfoNCE options (``temperature=1.0`` reproduces the release).
        negatives: ``"batch"`` (each image corrupted by every mask of the batch, ``B*B`` extra partial D passes
            without autograd; the release) or an int ``M`` of fresh masks per image.
        negatives_from: ``"local"`` (default) or ``"global"``: under DDP, the masks of every rank (see
            :class:`~scatloss.SCATCriterion`).
        fill: hole value of :math:`\tilde x` and the negatives (1.0, white, as AOT-GAN fills its input).
        chunk_size, seed: see :class:`~scatloss.SCATCriterion`.
        check_range, check_mask: the boundary checks above.

    After each call, :attr:`last_terms` holds the detached unweighted terms for logging: ``"d_adv"``,
    ``"d_scat"``, ``"g_adv"``, ``"g_scat"`` and, when configured, ``"g_text"``, ``"g_sem"``.

    Shape:
        - fake, real: ``(B, C, H, W)`` in ``[-1, 1]``; masks: ``(B, 1, H, W)``, 1 = missing.
        - returns two scalars ``(dis_loss, gen_loss)``.

    Raises:
        TypeError: ``netD`` not a :class:`SCATDiscriminator` (or a DDP wrapper around one; the message names what
            arrived), a ``DataParallel`` wrapper; non-float tensors.
        ValueError: shapes, hole values outside ``[0, 1]``, and the boundary checks above.
    """

    def __init__(
        self,
        *,
        host_adv_weight: float = 1.0,
        host_rec_weight: float = 1.0,
        lambda_text: float = 10.0,
        lambda_sem: float = 1.0,
        lambda_rec: float = 10.0,
        kind: Kind = "hinge",
        scat_kind: Kind | None = None,
        region: Region = "hole",
        resample: Resample = "area",
        temperature: float = 0.07,
        normalize: bool = True,
        negatives: Literal["batch"] | int = "batch",
        negatives_from: Literal["local", "global"] = "local",
        fill: float = 1.0,
        chunk_size: int = 8,
        seed: int = 0,
        check_range: bool = True,
        check_mask: bool = True,
    ) -> None:
        super().__init__()
        self.host_adv_weight = _check_weight("host_adv_weight", host_adv_weight)
        if not self.host_adv_weight > 0:
            raise ValueError(f"host_adv_weight: expected a weight > 0 (the host's adv_weight), got {host_adv_weight!r}")
        self.host_rec_weight = _check_weight("host_rec_weight", host_rec_weight)
        self.lambda_rec = _check_weight("lambda_rec", lambda_rec)
        if not self.lambda_rec > 0:
            raise ValueError(f"lambda_rec: expected a weight > 0 (the paper's: 10), got {lambda_rec!r}")
        self.lambda_text = _check_weight("lambda_text", lambda_text)
        self.lambda_sem = _check_weight("lambda_sem", lambda_sem)
        self.negatives_from = check_choice("negatives_from", negatives_from, ("local", "global"))
        self._synced: set[int] = set()
        self.kind = check_choice("kind", kind, KINDS)
        self.scat_kind = check_choice("scat_kind", scat_kind if scat_kind is not None else kind, KINDS)
        self.region = check_choice("region", region, REGIONS)
        self.resample = check_choice("resample", resample, RESAMPLE_MODES)
        self.temperature = temperature
        self.normalize = bool(normalize)
        check_criterion_options(negatives, chunk_size, fill)
        self.negatives = negatives
        self.fill = fill
        self.chunk_size = chunk_size
        self.seed = seed
        self.check_range = bool(check_range)
        self.check_mask = bool(check_mask)
        self.last_terms: dict[str, torch.Tensor] = {}
        # One criterion per SCATDiscriminator, not registered: the loss owns no parameters.
        self._criteria: dict[int, tuple[weakref.ref[SCATDiscriminator], SCATCriterion]] = {}
        # Validate the options once, eagerly, on a throwaway objective.
        self._objective(None)

    @property
    def contrastive_scale(self) -> float:
        """``host_rec_weight / (lambda_rec * host_adv_weight)``: the factor on ``lambda_text``, ``lambda_sem``."""
        return self.host_rec_weight / (self.lambda_rec * self.host_adv_weight)

    def _objective(self, scat_d: SCATDiscriminator | None) -> InpaintingObjective:
        in_features = None
        if scat_d is not None and scat_d.projection is not None:
            in_features = scat_d.feature_dim
        hidden, out = scat_d._head_sizes if scat_d is not None else (256, 256)
        objective = InpaintingObjective(
            lambda_adv=1.0,
            lambda_text=self.lambda_text * self.contrastive_scale,
            lambda_sem=self.lambda_sem * self.contrastive_scale,
            lambda_rec=0.0,
            kind=self.kind,  # type: ignore[arg-type]
            scat_kind=self.scat_kind,  # type: ignore[arg-type]
            region=self.region,  # type: ignore[arg-type]
            resample=self.resample,  # type: ignore[arg-type]
            temperature=self.temperature,
            normalize=self.normalize,
            in_features=in_features,
            hidden_features=hidden,
            out_features=out,
        )
        if in_features is not None:
            # Share the discriminator wrapper's head: it is what generator_parameters() hands to optimG.
            objective.semantic.projection = scat_d.projection  # type: ignore[union-attr]
        return objective

    def criterion(self, netD: SCATDiscriminator) -> SCATCriterion:
        """The :class:`~scatloss.SCATCriterion` this loss uses for ``netD`` (built on first use, then cached)."""
        key = id(netD)
        cached = self._criteria.get(key)
        if (
            cached is not None
            and cached[0]() is netD
            and cached[1].discriminator is netD.netD
            and cached[1].segmenter is netD.segmenter
        ):
            return cached[1]  # rebuilt below when netD.netD or netD.segmenter was replaced
        crit = SCATCriterion(
            netD.netD,
            segmenter=netD.segmenter,
            textural_layers=netD.textural_layers,
            semantic_layer=netD.semantic_layer,
            global_output=0,  # a tensor output (the patch map) is taken as the global logits
            semantic_pool=netD.semantic_pool,  # type: ignore[arg-type]
            negatives=self.negatives,
            negatives_from=self.negatives_from,  # type: ignore[arg-type]
            seed=self.seed,
            chunk_size=self.chunk_size,
            fill=self.fill,
            objective=self._objective(netD),
            freeze_discriminator=True,
        )
        self._criteria = {k: v for k, v in self._criteria.items() if v[0]() is not None}
        self._criteria[key] = (weakref.ref(netD), crit)
        return crit

    def forward(
        self, netD: SCATDiscriminator, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dis_loss, gen_loss)``; see the class docstring."""
        inner, wrapper = unwrap(
            "netD",
            netD,
            SCATDiscriminator,
            "wrap the host's discriminator first (netD = SCATDiscriminator(net.Discriminator())), then DDP around it",
        )
        check_float_tensor("fake", fake, ndim=4)
        check_float_tensor("real", real, ndim=4)
        if fake.shape != real.shape:
            raise ValueError(f"fake: expected the shape of real {tuple(real.shape)}, got {tuple(fake.shape)}")
        checks = ValueChecks()  # every value check of the call, read back in one transfer
        check_hole(masks, batch=real.shape[0], name="masks", checks=checks)
        if masks.shape[-2:] != real.shape[-2:]:
            raise ValueError(
                f"masks: expected the spatial size of real {tuple(real.shape[-2:])}, got {tuple(masks.shape[-2:])}"
            )
        if self.check_range:
            check_image_range("real", real, expected=(-1.0, 1.0), host="AOT-GAN", checks=checks)
        if self.check_mask:
            check_hole_convention("masks", fake.detach(), real, masks, host="AOT-GAN", checks=checks)
        checks.run()
        if wrapper is None:
            return self._step(inner, fake, real, masks)
        if id(wrapper) not in self._synced:
            # DDP broadcast D and S at construction but not the head (SCATDiscriminator.parameters() leaves it out).
            broadcast_parameters(list(inner.generator_parameters()), wrapper.process_group)
            self._synced.add(id(wrapper))
        # One DDP forward that runs the whole step: DDP then all-reduces D's, S's and the head's gradients.
        crit = self.criterion(inner)
        crit.process_group = wrapper.process_group
        result: tuple[torch.Tensor, torch.Tensor] = wrapper(fake, real, masks, **{STEP_KEYWORD: self._step})
        return result

    def _step(
        self, netD: SCATDiscriminator, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        crit = self.criterion(netD)
        with validated():  # checked once, in forward: the criterion and what it calls skip their value checks
            d_terms = crit.discriminator_step(fake, real, masks)
            g_terms = crit.generator_step(fake, real, masks)
        self.last_terms = {f"d_{k}": v.detach() for k, v in d_terms.items() if k != "total"}
        self.last_terms.update({f"g_{k}": v.detach() for k, v in g_terms.items() if k not in ("total", "rec")})
        return d_terms["total"], g_terms["total"]

    def extra_repr(self) -> str:
        return (
            f"host_adv_weight={self.host_adv_weight}, host_rec_weight={self.host_rec_weight}, "
            f"lambda_text={self.lambda_text}, lambda_sem={self.lambda_sem}, lambda_rec={self.lambda_rec}, "
            f"kind={self.kind!r}, scat_kind={self.scat_kind!r}, region={self.region!r}, negatives={self.negatives!r}"
        )
