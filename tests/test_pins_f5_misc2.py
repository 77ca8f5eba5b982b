"""Tests pinning behaviour that mutation testing (session 5) found unchecked in a few small functions: the release
drop-in's generator step, ``broadcast_parameters``, LaMa's mask resampling to the patch map, the empty buckets of
:func:`scatloss.evaluate.evaluate` and the default detectability probe."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from scatloss.adapters import release as release_module
from scatloss.adapters._common import broadcast_parameters
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import B, C, S, holes, tiny_seg
from tests.test_adapters_release import SIZE, release_case

pytest.importorskip("torchmetrics")

from scatloss import evaluate as ev  # noqa: E402
from scatloss.evaluate import BucketMetrics  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------------
# release.dualadv.G
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scat_type", "term"),
    [("nsgan", lambda z: F.softplus(-z)), ("lsgan", lambda z: (z - 1).square())],
)
def test_release_g_scat_term_uses_scat_type_on_the_hole(scat_type: str, term: Any) -> None:
    """``dualadv.G``'s SCAT term follows ``args.SCAT_type`` (nsgan: ``softplus(-S)``, lsgan: ``(S - 1)^2``), restricted
    to the hole and divided by every pixel (the release's ``mean(l(S(comp)) * (1 - valid))``); the global term
    follows ``globalgan_type`` (hinge: ``-mean(D(comp))``)."""
    netD, _, masks, _, comp = release_case(2)
    adv = release_module.dualadv(SimpleNamespace(globalgan_type="hingegan", SCAT_type=scat_type))
    g_adv, g_scat = adv.G(netD, comp, 1 - masks)
    with torch.no_grad():
        _, _, g_global, g_pixel = netD(comp)
    torch.testing.assert_close(g_scat, (term(g_pixel) * masks).mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_adv, -g_global.mean(), rtol=1e-12, atol=1e-14)


def test_release_g_checks_fake_is_4d() -> None:
    """``dualadv.G`` with a 3-D ``fake`` raises ``ValueError`` naming ``fake`` and its shape, before the mask check
    or netD run."""
    netD, _, masks, _, comp = release_case(2)
    adv = release_module.dualadv(SimpleNamespace())
    with pytest.raises(ValueError, match=rf"^fake: expected a 4-D tensor, got shape \(3, {SIZE}, {SIZE}\)$"):
        adv.G(netD, comp[0], 1 - masks)


# ----------------------------------------------------------------------------------------------------------------------
# _common.broadcast_parameters
# ----------------------------------------------------------------------------------------------------------------------


class _Group:
    """A process group made of the given global ranks (group rank ``i`` is global rank ``ranks[i]``)."""

    def __init__(self, ranks: list[int]) -> None:
        self.ranks = ranks


def _fake_dist(monkeypatch: pytest.MonkeyPatch, initialized: bool) -> list[tuple[torch.Tensor, int, Any]]:
    """Replace torch.distributed's entry points with a recording fake; returns the list of broadcasts."""
    calls: list[tuple[torch.Tensor, int, Any]] = []

    def get_global_rank(group: Any, group_rank: int) -> int:
        if not isinstance(group, _Group):  # as torch: only registered groups have a rank map
            raise ValueError(f"Group {group} is not registered")
        return group.ranks[group_rank]

    def broadcast(tensor: torch.Tensor, src: int | None = None, group: Any = None, async_op: bool = False) -> None:
        calls.append((tensor, src, group))  # type: ignore[arg-type]

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: initialized)
    monkeypatch.setattr(dist, "get_global_rank", get_global_rank)
    monkeypatch.setattr(dist, "broadcast", broadcast)
    return calls


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(3))]


def test_broadcast_parameters_is_a_no_op_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an initialised process group nothing is broadcast (and nothing raises)."""
    calls = _fake_dist(monkeypatch, initialized=False)
    assert broadcast_parameters(_params()) is None
    assert broadcast_parameters(_params(), _Group([3, 5])) is None
    assert calls == []


def test_broadcast_parameters_sends_each_parameter_from_rank_0_of_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a process group every parameter's data is broadcast from rank 0 of ``group``: global rank 0 for the
    default group (``None``, passed on as such), the group's first member's global rank otherwise; an empty list
    broadcasts nothing."""
    calls = _fake_dist(monkeypatch, initialized=True)
    broadcast_parameters([])
    assert calls == []
    params = _params()
    broadcast_parameters(params)
    assert [(t.data_ptr(), src, group) for t, src, group in calls] == [(p.data_ptr(), 0, None) for p in params]
    calls.clear()
    group = _Group([3, 5])
    broadcast_parameters(params, group)
    assert [(t.data_ptr(), src, g) for t, src, g in calls] == [(p.data_ptr(), 3, group) for p in params]


# ----------------------------------------------------------------------------------------------------------------------
# lama.SCATAdversarialLoss._mask_at
# ----------------------------------------------------------------------------------------------------------------------


def _lama_case(dtype: torch.dtype, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    real = torch.rand(B, C, S, S, generator=torch.Generator().manual_seed(2))
    masks = holes()
    fake = masks * torch.rand(real.shape, generator=torch.Generator().manual_seed(4)) + (1 - masks) * real
    pred = torch.linspace(-2, 2, B * h * w, dtype=torch.float64).view(B, 1, h, w).to(dtype)
    return real, fake, masks, pred


def _max_blocks(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Any-missing per adaptive block: rows ``floor(i H / h) .. ceil((i + 1) H / h)``, likewise columns."""
    H, W = mask.shape[-2:]
    out = torch.zeros(mask.shape[0], 1, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            rows = slice(i * H // h, math.ceil((i + 1) * H / h))
            cols = slice(j * W // w, math.ceil((j + 1) * W / w))
            out[:, 0, i, j] = mask[:, 0, rows, cols].flatten(1).amax(1).double()
    return out


def _lama(**kwargs: Any) -> SCATAdversarialLoss:
    torch.manual_seed(0)
    kwargs.setdefault("use_unmasked_for_gen", False)
    kwargs.setdefault("use_unmasked_for_discr", False)
    return SCATAdversarialLoss(segmenter=tiny_seg(), **kwargs)


def test_lama_max_mask_scale_marks_a_patch_missing_if_any_pixel_under_it_is() -> None:
    """``mask_scale_mode="max"`` resamples the 16x16 mask to a non-square 3x5 patch map by any-missing per adaptive
    block: the generator's adversarial term (``use_unmasked_for_gen=False``) is ``mean(softplus(-D(fake)) * m)``."""
    h, w = 3, 5
    real, fake, masks, pred = _lama_case(torch.float64, h, w)
    loss = _lama(allow_scale_mask=True, mask_scale_mode="max").double()
    _, metrics = loss.generator_loss(real.double(), fake.double(), pred, pred, masks.double())
    m = _max_blocks(masks, h, w)
    assert 0 < float(m.mean()) < 1
    torch.testing.assert_close(metrics["gen_adv_term"], (F.softplus(-pred) * m).mean(), rtol=1e-12, atol=1e-14)


def test_lama_non_square_patch_map_of_the_image_size_needs_no_rescaling() -> None:
    """A non-square patch map whose size is the mask's is used as it is (no ``allow_scale_mask`` needed)."""
    torch.manual_seed(0)
    loss = _lama()
    real = torch.rand(B, C, 8, 16, generator=torch.Generator().manual_seed(2))
    masks = torch.zeros(B, 1, 8, 16)
    masks[:, :, 2:6, 3:12] = 1.0
    fake = masks * 0.5 + (1 - masks) * real
    pred = torch.linspace(-2, 2, B * 8 * 16, dtype=torch.float32).view(B, 1, 8, 16)
    _, metrics = loss.generator_loss(real, fake, pred, pred, masks)
    torch.testing.assert_close(metrics["gen_adv_term"], (F.softplus(-pred) * masks).mean())


def test_lama_max_mask_scale_equals_maxpool_in_the_patch_maps_dtype() -> None:
    """``"max"`` (scatloss's max-resampling) and ``"maxpool"`` (LaMa's ``adaptive_max_pool2d``) give the same terms,
    in the patch map's dtype (bfloat16 logits, float32 mask), on the generator side (``mask_as_fake_target`` with
    ``extra_mask_weight_for_gen``) and the discriminator side (``mask_as_fake_target``)."""
    real, fake, masks, pred = _lama_case(torch.bfloat16, 3, 5)
    got: dict[str, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
    for mode in ("max", "maxpool"):
        loss = _lama(
            allow_scale_mask=True,
            mask_scale_mode=mode,
            mask_as_fake_target=True,
            extra_mask_weight_for_gen=2.0,
            use_unmasked_for_gen=True,
            use_unmasked_for_discr=True,
            gp_coef=0.0,
        )
        got[mode] = (
            loss.generator_loss(real, fake, pred, pred, masks)[1],
            loss.discriminator_loss(real, fake, pred, pred, masks)[1],
        )
    for side in range(2):
        for key, want in got["maxpool"][side].items():
            assert got["max"][side][key].dtype == want.dtype, key
            assert torch.equal(got["max"][side][key], want), key
    assert got["max"][0]["gen_adv_term"].dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------------------------
# evaluate: empty buckets; the default detectability probe
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_reports_an_empty_bucket_with_no_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket no sample falls in keeps its name and bounds, count 0, no L1 / PSNR / SSIM (None, not 0 or NaN),
    no capped sample and no FID."""

    def half_mask(height: int, width: int, *, bucket: Any = None, generator: Any = None, seed: Any = None):
        mask = torch.zeros(1, height, width)
        mask[:, : height // 2] = 1.0  # always 50 % missing -> "40-60%"
        return mask

    monkeypatch.setattr(ev, "free_form_mask", half_mask)
    images = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = ev.evaluate(lambda corrupted, hole: corrupted, images, seed=0)
    assert report.buckets[:2] == (
        BucketMetrics("0-20%", (0.0, 0.2), 0, None, None, None, 0, None),
        BucketMetrics("20-40%", (0.2, 0.4), 0, None, None, None, 0, None),
    )
    full = report.buckets[2]
    assert (full.name, full.bounds, full.count, full.psnr_capped) == ("40-60%", (0.4, 0.6), 3 * 2, 0)
    assert full.ssim is not None and full.l1 is not None and full.l1 > 0


def test_default_probe_is_a_16_channel_unet_without_spectral_norm_for_the_images_channels() -> None:
    """The default probe: a :class:`UNetSegmenter` for the images' channels, 16 base channels, no spectral norm,
    as deep as both sides allow (a 64x4 image: 2 halvings, limited by the width)."""
    probe = ev._default_probe(1, 64, 4)
    assert probe.in_channels == 1 and probe.depth == 2
    assert probe.encoder_channels == (16, 32)
    assert probe.stem[0].in_channels == 1 and probe.stem[0].out_channels == 16
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in probe.modules())
    assert probe(torch.rand(1, 1, 64, 4)).shape == (1, 1, 64, 4)
