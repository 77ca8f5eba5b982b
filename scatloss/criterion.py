"""``SCATCriterion``: one training step's terms with the least work and exactly the naive gradients.

The authors' release runs the discriminator five times per generator step, every time with autograd:
twice on the composite (once for the adversarial terms, once for the features), on the ground truth, the
corrupted input and the ``B*B`` negatives. Only the composite
carries gradient to the generator, so :class:`SCATCriterion` runs

* **one** discriminator forward with autograd, on the composite, which feeds the global adversarial
  term, the per-pixel SCAT term (two-headed layout) and the anchors of both contrastive losses;
* the ground truth, the corrupted input and the negatives under ``torch.no_grad()``, through a
  :class:`~scatloss.taps.FeatureTap` with early exit (layers after the deepest requested feature, e.g. a
  U-Net discriminator's whole decoder, never run) and with buffers preserved (spectral-norm power
  iterations and BatchNorm statistics are not advanced by these extraction passes);
* the negatives in chunks of ``chunk_size`` images, so peak memory does not grow with ``B * M``.

The projection head of the semantic loss is applied to all features *with* autograd, so it still
receives the gradients of every term that involves it. Generator and head gradients equal those of the
naive computation (``mode="naive"``, the release's) to float64 round-off when the discriminator is in
eval mode; in train mode the release's extra forwards additionally advance spectral norm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

from . import functional as SF
from ._validation import (
    MAX_MEAN_HOLE_RATIO,
    ValueChecks,
    check_bool,
    check_choice,
    check_float_tensor,
    check_hole,
    check_hole_convention,
    check_hole_ratio,
    check_image_range,
    check_nonempty_batch,
    check_number,
    check_same_device,
    describe,
    validated,
)
from .losses import InpaintingObjective
from .taps import FeatureTap
from .utils import frozen_parameters

__all__ = ["SCATCriterion"]

TERMS: tuple[str, ...] = ("adv", "scat", "text", "sem", "rec")
Pool = Literal["relu_sum", "mean", "flatten"]
MaskSampler = Callable[[int, int, int], torch.Tensor]


def _select(output: Any, key: int | str | None, what: str, *, tensor_ok: bool = True) -> torch.Tensor | None:
    """Pick a head's logits out of a module output (tensor, tuple/list or dict).

    A single tensor output is the only head; ``tensor_ok=False`` (the per-pixel head while a global head
    is configured) refuses it, since the same tensor would otherwise feed both the global and the SCAT term.
    """
    if key is None:
        return None
    if isinstance(output, torch.Tensor):
        if not tensor_ok:
            raise ValueError(
                f"{what}: expected a discriminator output with several heads (tuple, list or dict) to take "
                f"{key!r} from, got a single tensor of shape {tuple(output.shape)}, which is taken as the global "
                "logits; pass pixel_output=None (no SCAT term), segmenter=S (a separate segmenter), or "
                "global_output=None (the tensor is the per-pixel map)"
            )
        return output
    try:
        value = output[key]
    except (IndexError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{what}: expected index or key {key!r} into the discriminator's output, got an output of type "
            f"{type(output).__name__} without it ({exc})"
        ) from None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what}: expected the discriminator's output[{key!r}] to be a tensor, got {describe(value)}")
    return value


class SCATCriterion(nn.Module):
    r"""Every term of the paper's objective (Eq. 8) for one generator step and one discriminator step.

    Two layouts:

    * **one network, two heads** (the released code, default): ``discriminator(x)`` returns global
      logits and a per-pixel logit map, picked by ``global_output`` / ``pixel_output`` (indices or keys
      into its output; :class:`scatloss.nets.UNetDiscriminator` returns ``(global, pixel)``);
    * **separate D and S** (the paper's figure): pass ``segmenter=S``; ``pixel_output`` is then ignored.

    Features come from any layers of the discriminator, by ``named_modules()`` name (see
    :class:`~scatloss.taps.FeatureTap`): ``textural_layers`` for Eq. 3 and ``semantic_layer`` for Eq. 4
    (a vector ``(B, D)`` is used as it is; a map ``(B, C, H, W)`` is pooled by ``semantic_pool``:
    ``"relu_sum"`` as in the release, ``"mean"``, or ``"flatten"``).

    Negatives of the semantic loss: ``negatives="batch"`` corrupts each ground truth by every mask of the
    batch, its own included (the release; ``M = B``); an int ``M`` corrupts each ground truth by ``M``
    freshly drawn masks from ``mask_sampler(n, height, width) -> (n, 1, H, W)`` (default: a
    :class:`scatloss.masks.MaskGenerator` seeded with ``seed``).

    The criterion's own parameters are those of the objective's projection head (if any): hand
    ``criterion.parameters()`` to the **generator's** optimiser. The discriminator and segmenter are
    *not* registered as submodules, so they appear in neither ``parameters()`` nor ``state_dict()``.

    Args:
        discriminator: the discriminator ``D`` (may be DDP-wrapped).
        textural_layers: names of the shallow layers for Eq. 3 (empty: no textural term).
        semantic_layer: name of the layer for Eq. 4, e.g. ``"global_head:input"`` (``None``: no semantic term).
        segmenter: a separate segmentation network ``S`` (``None``: ``D``'s per-pixel head).
        global_output, pixel_output: where the global and the per-pixel logits are in ``D``'s output
            (``None``: that head does not exist). A single tensor output is taken as the global logits (then
            ``pixel_output`` must be ``None`` or a ``segmenter`` given; ``ValueError`` otherwise), or as the
            per-pixel logits when ``global_output=None``.
        semantic_pool: pooling of a semantic feature *map*.
        negatives: ``"batch"`` or a number ``M >= 1`` of fresh masks per image.
        mask_sampler: source of fresh masks for an int ``negatives``.
        negatives_from: with ``negatives="batch"``, whose masks corrupt each ground truth: ``"local"`` (default,
            this process's batch: under data parallelism ``M`` = the local batch size, and the loss differs from
            one process on the whole batch) or ``"global"`` (the masks of every rank, gathered with
            ``torch.distributed.all_gather``: ``M`` = the global batch, and ``N`` ranks compute exactly the
            per-anchor losses of one process on the concatenated batch; only the local anchors carry gradient).
            Without an initialised process group ``"global"`` is ``"local"``. Int ``negatives`` draw fresh masks
            per image and are not batch-coupled; the option does not apply to them.
        process_group: the group ``"global"`` gathers over (default: the world).
        seed: seed of the default mask sampler.
        chunk_size: images per autograd-free feature pass (bounds the memory of the negatives).
        fill: hole value of corrupted inputs and negatives (1.0 in the release, white in ``[-1, 1]``).
        objective: weights and loss options (:class:`~scatloss.losses.InpaintingObjective`; default: the
            paper's weights, hinge, no projection head). To use the released projection head pass
            ``InpaintingObjective(in_features=D_sem)``.
        terms: which generator terms to compute, a subset of ``("adv", "scat", "text", "sem", "rec")``;
            default: every term the configuration supports. (``rec`` is always computed.)
        freeze_discriminator: during :meth:`generator_step`, build the graph without gradients for the
            discriminator's and segmenter's parameters (``requires_grad`` is switched off for the forward
            and restored before returning), which skips their weight-gradient work in the backward pass.
            Turn off if you need those gradients, or with a ``DistributedDataParallel``-wrapped
            discriminator.
        mode: ``"fast"`` (default) or ``"naive"``: the release's computation (five passes with autograd: the
            composite twice, for the adversarial terms and for the features, then the ground truth, the corrupted
            input and all negatives at once; no early exit), for checking and benchmarking. In train mode each pass
            advances spectral norm, as in the release.
        check_inputs: run the boundary checks of each step (default on; ``False`` switches them off). Cheap ones,
            without synchronisation: the image's dtype and device against the discriminator's parameters (outside
            autocast), prediction and image swapped (``generator_step`` given an ``image`` that requires grad and a
            ``prediction`` that does not). Value heuristics, read back with the mask's ``[0, 1]`` check in **one**
            device-to-host transfer per step (also off under ``scatloss.set_value_checks(False)``): ``image``
            outside ``image_range`` (a ``[0, 1]`` batch with no negative value, ``[0, 255]``, NaN), and a hole mask
            that looks inverted (1 = known): the batch's mean hole ratio, all-hole samples left out, above
            ``0.6`` (the paper's largest), or a composite passed as ``prediction`` that equals ``image`` exactly
            on every pixel the mask calls a hole. Everything the step calls afterwards skips its own value checks.
        image_range: the images' value range for the range check: ``(-1, 1)`` (default, as AOT-GAN and the
            release) or ``(0, 1)`` (LaMa); ``None`` skips that check only.

    Shape:
        - prediction, image: ``(B, C, H, W)``; hole: ``(B, 1, H, W)``, 1 = missing. ``B >= 1``.

    Example::

        D = scatloss.nets.UNetDiscriminator()
        crit = SCATCriterion(D, textural_layers=D.textural_layers, semantic_layer=D.semantic_layer,
                             objective=scatloss.InpaintingObjective(in_features=D.feature_dim))
        opt_g = torch.optim.Adam([*G.parameters(), *crit.parameters()])
        d_terms = crit.discriminator_step(prediction.detach(), image, hole)   # backward into D
        g_terms = crit.generator_step(prediction, image, hole)                # backward into G and head
    """

    def __init__(
        self,
        discriminator: nn.Module,
        *,
        textural_layers: Sequence[str] = (),
        semantic_layer: str | None = None,
        segmenter: nn.Module | None = None,
        global_output: int | str | None = 0,
        pixel_output: int | str | None = 1,
        semantic_pool: Pool = "relu_sum",
        negatives: Literal["batch"] | int = "batch",
        mask_sampler: MaskSampler | None = None,
        negatives_from: Literal["local", "global"] = "local",
        process_group: Any = None,
        seed: int = 0,
        chunk_size: int = 8,
        fill: float = 1.0,
        objective: InpaintingObjective | None = None,
        terms: Collection[str] | None = None,
        freeze_discriminator: bool = True,
        mode: Literal["fast", "naive"] = "fast",
        check_inputs: bool = True,
        image_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if not isinstance(check_inputs, bool):
            raise TypeError(f"check_inputs: expected a bool, got {describe(check_inputs)}")
        self.check_inputs = check_inputs
        if image_range is not None:
            if not isinstance(image_range, (tuple, list)) or len(image_range) != 2:
                raise TypeError(
                    f"image_range: expected a (low, high) pair of floats or None, got {describe(image_range)}"
                )
            lo = check_number("image_range[0]", image_range[0])
            hi = check_number("image_range[1]", image_range[1])
            if not lo < hi:
                raise ValueError(f"image_range: expected low < high, got {tuple(image_range)!r}")
            image_range = (lo, hi)
        self.image_range = image_range
        if not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator: expected a torch.nn.Module, got {describe(discriminator)}")
        if segmenter is not None and not isinstance(segmenter, nn.Module):
            raise TypeError(f"segmenter: expected a torch.nn.Module or None, got {describe(segmenter)}")
        if isinstance(textural_layers, str):
            raise TypeError(f"textural_layers: expected a sequence of layer names, got the str {textural_layers!r}")
        self.textural_layers = tuple(textural_layers)
        self.semantic_layer = semantic_layer
        self.global_output = global_output
        self.pixel_output = None if segmenter is not None else pixel_output
        self.semantic_pool = check_choice("semantic_pool", semantic_pool, ("relu_sum", "mean", "flatten"))
        if negatives != "batch" and (isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1):
            raise ValueError(f"negatives: expected 'batch' or an int M >= 1, got {negatives!r}")
        self.negatives = negatives
        self.negatives_from = check_choice("negatives_from", negatives_from, ("local", "global"))
        self.process_group = process_group
        self.mask_sampler = mask_sampler
        self.seed = seed
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.fill = check_number("fill", fill, what="a finite float")
        self.objective = objective if objective is not None else InpaintingObjective()
        if not isinstance(self.objective, InpaintingObjective):
            raise TypeError(f"objective: expected an InpaintingObjective, got {describe(self.objective)}")
        self.freeze_discriminator = check_bool("freeze_discriminator", freeze_discriminator)
        self.mode = check_choice("mode", mode, ("fast", "naive"))

        available = {"rec"}
        if global_output is not None:
            available.add("adv")
        if segmenter is not None or pixel_output is not None:
            available.add("scat")
        if self.textural_layers:
            available.add("text")
        if semantic_layer is not None:
            available.add("sem")
        if terms is None:
            chosen = set(available)
        else:
            chosen = set(terms)
            unknown = chosen - set(TERMS)
            if unknown:
                raise ValueError(f"terms: expected a subset of {TERMS}, got unknown {sorted(unknown)}")
            missing = chosen - available
            if missing:
                raise ValueError(
                    f"terms: {sorted(missing)} requested but the criterion is not configured for them "
                    "(adv needs global_output, scat needs pixel_output or segmenter, text needs textural_layers, "
                    "sem needs semantic_layer)"
                )
            chosen.add("rec")
        self.terms = tuple(t for t in TERMS if t in chosen)

        # Networks are held outside nn.Module registration: not ours to save or optimise.
        self._nets: dict[str, nn.Module | None] = {"D": discriminator, "S": segmenter}
        layers = self._feature_layers()
        self._tap_full: FeatureTap | None = None
        self._tap_early: FeatureTap | None = None
        self._tap_sem: FeatureTap | None = None
        if layers:
            try:
                self._tap_full = FeatureTap(discriminator, layers)
                self._tap_early = FeatureTap(discriminator, layers, early_exit=True, preserve_buffers=True)
                if "sem" in self.terms:
                    self._tap_sem = FeatureTap(discriminator, [semantic_layer], early_exit=True, preserve_buffers=True)  # type: ignore[list-item]
            except ValueError as exc:
                raise ValueError(f"SCATCriterion: the discriminator lacks a layer the criterion needs: {exc}") from exc
        self._sampler_cache: dict[tuple[int, int], Any] = {}

    # ------------------------------------------------------------------------------------------
    @property
    def discriminator(self) -> nn.Module:
        return self._nets["D"]  # type: ignore[return-value]

    @property
    def segmenter(self) -> nn.Module | None:
        return self._nets["S"]

    def _feature_layers(self) -> list[str]:
        layers: list[str] = []
        if "text" in self.terms:
            layers.extend(self.textural_layers)
        if "sem" in self.terms and self.semantic_layer not in layers:
            layers.append(self.semantic_layer)  # type: ignore[arg-type]
        return layers

    def extra_repr(self) -> str:
        return (
            f"terms={self.terms}, textural_layers={self.textural_layers}, semantic_layer={self.semantic_layer!r}, "
            f"negatives={self.negatives!r}, mode={self.mode!r}"
        )

    # ------------------------------------------------------------------------------------------
    def _check_inputs(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor, *, generator: bool
    ) -> None:
        """Every check of a step, its value checks read back in one transfer (see ``check_inputs``)."""
        check_float_tensor("prediction", prediction, ndim=4)
        check_float_tensor("image", image, ndim=4)
        if prediction.shape != image.shape:
            raise ValueError(
                f"prediction: expected the shape of image {tuple(image.shape)}, got {tuple(prediction.shape)}"
            )
        check_nonempty_batch("image", image)
        checks = ValueChecks()
        check_hole(hole, batch=image.shape[0], checks=checks)
        if hole.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"hole: expected the spatial size of image {tuple(image.shape[-2:])}, got {tuple(hole.shape[-2:])}"
            )
        check_same_device(prediction=prediction, image=image, hole=hole)
        if self.check_inputs:
            self._check_against_networks(image)
            if generator and torch.is_grad_enabled() and image.requires_grad and not prediction.requires_grad:
                raise ValueError(
                    "prediction, image: expected the generator's output (with gradient to G) as prediction and the "
                    "ground truth as image, got an image that requires grad and a prediction that does not; they "
                    "look swapped (pass check_inputs=False if this is intended)"
                )
            switch = "check_inputs=False"
            if self.image_range is not None:
                check_image_range(
                    "image", image, expected=self.image_range, host="SCATCriterion", checks=checks, switch=switch
                )
            check_hole_convention("hole", prediction, image, hole, host="scatloss", checks=checks, switch=switch)
            check_hole_ratio("hole", hole, limit=MAX_MEAN_HOLE_RATIO, checks=checks, switch=switch)
        checks.run()

    def _check_against_networks(self, image: torch.Tensor) -> None:
        """The image's device and dtype against the first floating parameter of D (and S): named errors instead
        of a convolution's RuntimeError. The dtype is not compared under autocast, which casts per op."""
        for what, net in (("discriminator", self.discriminator), ("segmenter", self.segmenter)):
            if net is None:
                continue
            param = next((p for p in net.parameters() if p.is_floating_point()), None)
            if param is None:
                continue
            if param.device != image.device:
                raise ValueError(
                    f"image: expected tensors on the {what}'s device {param.device}, got {image.device}; move "
                    f"the inputs (or the {what}) with .to(device)"
                )
            try:
                autocast = torch.is_autocast_enabled(image.device.type)
            except (RuntimeError, TypeError):  # a device type without autocast (meta)
                autocast = False
            if param.dtype != image.dtype and not autocast:
                raise TypeError(
                    f"image: expected dtype {param.dtype} like the {what}'s parameters, got {image.dtype}; convert "
                    f"the inputs with .to({param.dtype}) (or the {what}), or run the step under torch.autocast"
                )

    def _pool(self, feature: torch.Tensor) -> torch.Tensor:
        if not isinstance(feature, torch.Tensor):
            raise TypeError(
                f"semantic_layer {self.semantic_layer!r}: expected a tensor feature, got {describe(feature)}"
            )
        if feature.dim() == 2:
            return feature
        if feature.dim() < 2:
            raise ValueError(
                f"semantic_layer {self.semantic_layer!r}: expected a (B, D) vector or (B, C, ...) map, "
                f"got shape {tuple(feature.shape)}"
            )
        if self.semantic_pool == "flatten":
            return feature.flatten(1)
        dims = tuple(range(2, feature.dim()))
        if self.semantic_pool == "mean":
            return feature.mean(dim=dims)
        return torch.relu(feature).sum(dim=dims)

    def _sample_masks(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        if self.mask_sampler is not None:
            masks = self.mask_sampler(n, height, width)
        else:
            from .masks import MaskGenerator

            key = (height, width)
            if key not in self._sampler_cache:
                self._sampler_cache[key] = MaskGenerator(height, width, seed=self.seed)
            masks = self._sampler_cache[key].sample(n)
        masks = check_hole(masks, batch=n, name="mask_sampler(...)", recheck=self.mask_sampler is not None)
        if masks.shape[-2:] != (height, width):
            raise ValueError(
                f"mask_sampler(...): expected masks of size {(height, width)}, got {tuple(masks.shape[-2:])}"
            )
        return masks.to(device)

    def _gather_holes(self, hole: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(masks of every rank concatenated in rank order, offset of this rank's first mask)``."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return hole, 0
        group = self.process_group
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        if world == 1:
            return hole, 0
        meta = torch.tensor([world, *hole.shape], dtype=torch.int64, device=hole.device)
        metas = [torch.empty_like(meta) for _ in range(world)]
        dist.all_gather(metas, meta, group=group)
        rows = [tuple(int(v) for v in m.tolist()) for m in metas]
        if any(r[0] != world for r in rows):
            raise ValueError(
                f"negatives_from='global': expected every rank to see a world size of {world}, got "
                f"{[r[0] for r in rows]} (rank order)"
            )
        if any(r[1:] != rows[0][1:] for r in rows):
            raise ValueError(
                "hole: expected the same mask shape on every rank for negatives_from='global' (all_gather), got "
                + ", ".join(f"rank {i}: {r[1:]}" for i, r in enumerate(rows))
            )
        payload = hole.to(torch.float32) if hole.dtype == torch.bool else hole.contiguous()
        parts = [torch.empty_like(payload) for _ in range(world)]
        dist.all_gather(parts, payload, group=group)
        return torch.cat(parts).to(hole.dtype), rank * hole.shape[0]

    def _negative_masks(self, hole: torch.Tensor) -> tuple[torch.Tensor, int, bool, int]:
        """Masks of the negatives, ``(B * M, 1, H, W)`` as (image b, mask j) row-major, ``M``, shared?, and the
        index of image 0's own mask among shared masks (``rank * B`` for gathered masks, else 0)."""
        b = hole.shape[0]
        if self.negatives == "batch":
            if self.negatives_from == "global":
                masks, offset = self._gather_holes(hole)
                return masks, masks.shape[0], True, offset
            return hole, b, True, 0
        m = int(self.negatives)
        return self._sample_masks(b * m, hole.shape[-2], hole.shape[-1], hole.device), m, False, 0

    def _negative_images(
        self, image: torch.Tensor, masks: torch.Tensor, m: int, shared: bool, index: torch.Tensor
    ) -> torch.Tensor:
        """Corrupted images for flat negative indices ``index`` (``k = b * M + j``)."""
        b_idx = torch.div(index, m, rounding_mode="floor")
        mask = masks[index % m] if shared else masks[index]
        return SF.corrupt(image[b_idx], mask.to(image.dtype), fill=self.fill)

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.chunk_size):
            yield slice(start, min(start + self.chunk_size, n))

    def _frozen(self) -> contextlib.AbstractContextManager[None]:
        """Build the graph without parameter gradients for D and S; ``requires_grad`` is restored after."""
        if not self.freeze_discriminator or self.mode == "naive":
            return contextlib.nullcontext()
        return frozen_parameters(*self._nets.values())

    def _extract_fast(
        self, image: torch.Tensor, corrupted: torch.Tensor, hole: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
        """Features of ``x`` and ``x~`` and pooled semantic features of the negatives, without autograd."""
        tap, tap_sem = self._tap_early, self._tap_sem
        if tap is None:  # pragma: no cover - guarded by the callers
            raise RuntimeError("SCATCriterion: no feature taps configured")
        with torch.no_grad():
            pos = self._features_chunked(tap, image)
            neg = self._features_chunked(tap, corrupted)
            sem_negs: torch.Tensor | None = None
            if "sem" in self.terms and tap_sem is not None:
                masks, m, shared, offset = self._negative_masks(hole)
                b = image.shape[0]
                n_total = b * m
                # In "batch" mode the diagonal (image b, its own mask b) is the corrupted input, already done.
                # Index arithmetic on the CPU: boolean indexing of a device tensor would synchronise with it.
                flat = torch.arange(n_total)
                diagonal = (flat // m) + offset == (flat % m)
                todo = (flat[~diagonal] if shared else flat).to(image.device)
                own = self._pool(neg[self.semantic_layer])  # type: ignore[index]
                out = own.new_empty(n_total, own.shape[1])
                if shared:
                    out[flat[diagonal].to(image.device)] = own
                for sl in self._chunks(todo.numel()):
                    idx = todo[sl]
                    feats = tap_sem.features(self._negative_images(image, masks, m, shared, idx))
                    out[idx] = self._pool(feats[self.semantic_layer])  # type: ignore[index]
                sem_negs = out.view(b, m, own.shape[1])
        return pos, neg, sem_negs

    def _features_chunked(self, tap: FeatureTap, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[0] <= self.chunk_size:
            return tap.features(x)
        parts = [tap.features(x[sl]) for sl in self._chunks(x.shape[0])]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _extract_naive(
        self, image: torch.Tensor, corrupted: torch.Tensor, hole: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
        """The release's way: full forwards with autograd, all negatives in one batch."""
        tap = self._tap_full
        if tap is None:  # pragma: no cover - guarded by the callers
            raise RuntimeError("SCATCriterion: no feature taps configured")
        _, pos = tap(image)
        _, neg = tap(corrupted)
        sem_negs = None
        if "sem" in self.terms:
            masks, m, shared, _ = self._negative_masks(hole)
            b = image.shape[0]
            idx = torch.arange(b * m, device=image.device)
            _, feats = tap(self._negative_images(image, masks, m, shared, idx))
            pooled = self._pool(feats[self.semantic_layer])  # type: ignore[index]
            sem_negs = pooled.view(b, m, -1)
        return pos, neg, sem_negs

    # ------------------------------------------------------------------------------------------
    def generator_step(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The generator's terms (Eq. 8): ``"adv"``, ``"scat"``, ``"text"``, ``"sem"``, ``"rec"`` and ``"total"``.

        Args:
            prediction: ``(B, C, H, W)`` raw generator output (with gradient to G).
            image: ``(B, C, H, W)`` ground truth.
            hole: ``(B, 1, H, W)`` hole mask (1 = missing).

        Returns:
            A dict of unweighted terms and the weighted ``"total"`` to call ``backward()`` on.
        """
        self._check_inputs(prediction, image, hole, generator=True)
        with validated():  # checked once, here: what the step calls skips its own value checks
            return self._generator_terms(prediction, image, hole)

    def _generator_terms(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        comp = SF.composite(prediction, image, hole)
        need_feats = "text" in self.terms or "sem" in self.terms
        need_d = need_feats or "adv" in self.terms or ("scat" in self.terms and self.segmenter is None)
        fake_logits = pixel_logits = None
        anchor_feats: dict[str, torch.Tensor] = {}
        with self._frozen():
            if need_d:
                if need_feats and self._tap_full is not None and self.mode == "naive":
                    # The release: one pass for the adversarial terms, another for the anchor features.
                    output = self.discriminator(comp)
                    _, anchor_feats = self._tap_full(comp)
                elif need_feats and self._tap_full is not None:
                    output, anchor_feats = self._tap_full(comp)
                else:
                    output = self.discriminator(comp)
                if "adv" in self.terms:
                    fake_logits = _select(output, self.global_output, "global_output")
                if "scat" in self.terms and self.segmenter is None:
                    pixel_logits = _select(
                        output, self.pixel_output, "pixel_output", tensor_ok=self.global_output is None
                    )
            if "scat" in self.terms and self.segmenter is not None:
                pixel_logits = self.segmenter(comp)
        textural = semantic = None
        if need_feats:
            corrupted = SF.corrupt(image, hole, fill=self.fill)
            extract = self._extract_naive if self.mode == "naive" else self._extract_fast
            pos, neg, sem_negs = extract(image, corrupted, hole)
            if "text" in self.terms:
                textural = (
                    [anchor_feats[n] for n in self.textural_layers],
                    [pos[n] for n in self.textural_layers],
                    [neg[n] for n in self.textural_layers],
                )
            if "sem" in self.terms and sem_negs is not None:
                name = self.semantic_layer
                semantic = (self._pool(anchor_feats[name]), self._pool(pos[name]), sem_negs)  # type: ignore[index]
        return self.objective(
            prediction,
            image,
            hole,
            fake_logits=fake_logits,
            fake_pixel_logits=pixel_logits,
            textural=textural,
            semantic=semantic,
        )

    @classmethod
    def release(
        cls,
        discriminator: nn.Module,
        *,
        textural_layers: Sequence[str] | None = None,
        semantic_layer: str | None = None,
        in_features: int | None = None,
        **kwargs: Any,
    ) -> SCATCriterion:
        """The authors' released code's configuration (the named preset), for a two-headed discriminator.

        Layers default to the discriminator's ``textural_layers`` / ``semantic_layer`` / ``feature_dim``
        attributes (:class:`scatloss.nets.UNetDiscriminator` has them); the objective is
        :meth:`InpaintingObjective.release` (t = 1, ``x / (|x| + 1e-7)``, orthogonal head, unweighted D step);
        negatives ``"batch"`` (every mask of the batch, its own included), holes filled with 1. ``kwargs`` go to
        the constructor (e.g. ``negatives_from="global"``, ``chunk_size``, ``objective=`` to override).
        """
        textural = textural_layers if textural_layers is not None else getattr(discriminator, "textural_layers", ())
        semantic = semantic_layer if semantic_layer is not None else getattr(discriminator, "semantic_layer", None)
        dim = in_features if in_features is not None else getattr(discriminator, "feature_dim", None)
        objective = kwargs.pop("objective", None)
        if objective is None:
            objective = InpaintingObjective.release(in_features=dim if semantic is not None else None)
        options: dict[str, Any] = {"negatives": "batch", "fill": 1.0, "global_output": 0, "pixel_output": 1}
        options.update(kwargs)
        return cls(discriminator, textural_layers=textural, semantic_layer=semantic, objective=objective, **options)

    def discriminator_step(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The discriminator's and segmenter's terms: ``"adv"`` (Eq. 6), ``"scat"`` (Eq. 1) and ``"total"``.

        ``prediction`` is detached here; the composite is rebuilt from it.
        """
        self._check_inputs(prediction, image, hole, generator=False)
        with validated():  # checked once, here: what the step calls skips its own value checks
            return self._discriminator_terms(prediction, image, hole)

    def _discriminator_terms(
        self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        comp = SF.composite(prediction.detach(), image, hole)
        want_adv = "adv" in self.terms
        want_scat = "scat" in self.terms
        fake_out = real_out = None
        if want_adv or (want_scat and self.segmenter is None):
            fake_out, real_out = self.discriminator(comp), self.discriminator(image)
        kwargs: dict[str, torch.Tensor | None] = {}
        if want_adv:
            kwargs["fake_logits"] = _select(fake_out, self.global_output, "global_output")
            kwargs["real_logits"] = _select(real_out, self.global_output, "global_output")
        if want_scat:
            if self.segmenter is not None:
                kwargs["fake_pixel_logits"], kwargs["real_pixel_logits"] = self.segmenter(comp), self.segmenter(image)
            else:
                single = self.global_output is None
                kwargs["fake_pixel_logits"] = _select(fake_out, self.pixel_output, "pixel_output", tensor_ok=single)
                kwargs["real_pixel_logits"] = _select(real_out, self.pixel_output, "pixel_output", tensor_ok=single)
        if not kwargs:
            raise ValueError("SCATCriterion.discriminator_step: neither 'adv' nor 'scat' is among the terms")
        return self.objective.discriminator_loss(hole, **kwargs)  # type: ignore[arg-type]

    def forward(self, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor) -> dict[str, torch.Tensor]:
        """Alias of :meth:`generator_step`."""
        return self.generator_step(prediction, image, hole)
