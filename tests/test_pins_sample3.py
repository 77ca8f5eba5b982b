"""Tests pinning behaviour that mutation testing found unchecked in sample3.

Sample3 = surviving mutants of ``scatloss.adapters`` (``aotgan``, ``lama``), ``scatloss.criterion``,
``scatloss.evaluate``, ``scatloss.functional``, ``scatloss.masks``, ``scatloss.ops`` and
``scatloss.ops.torch_fused``. Each test compares with an independent expectation (a hand-computed value, the
documented argument name of an error, a float64 re-computation written here) on inputs where a surviving mutant
behaves differently.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import scatloss.functional as SF
import scatloss.masks as masks_module
from scatloss import evaluate as ev
from scatloss import ops
from scatloss.adapters.aotgan import SCATDiscriminator
from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.criterion import SCATCriterion
from tests._pins import B, S, holes, patch_d, smooth_images, tiny_seg
from tests._pins import full_shape as _full_shape
from tests._pins import identity as _identity
from tests._pins import stroke_reference as _stroke_reference

# ----------------------------------------------------------------------------------------------------------------------
# adapters.aotgan: the hint for DDP-prefixed keys
# ----------------------------------------------------------------------------------------------------------------------


def test_scat_discriminator_state_dict_error_hints_at_the_module_prefix() -> None:
    """Keys all starting with ``module.`` end the error with the documented hint, right after the examples."""
    torch.manual_seed(0)
    d = SCATDiscriminator(patch_d(), segmenter=tiny_seg(), hidden_features=4, out_features=3)
    wrapped = {f"module.{k}": v for k, v in d.state_dict().items()}
    with pytest.raises(ValueError, match=r"\] \(keys start with 'module\.': save the unwrapped module, or strip the "):
        d.load_state_dict(wrapped)
    with pytest.raises(ValueError) as info:
        d.load_state_dict(wrapped)
    assert str(info.value).endswith("'] (keys start with 'module.': save the unwrapped module, or strip the prefix)")


# ----------------------------------------------------------------------------------------------------------------------
# adapters.lama: constructor checks, check order
# ----------------------------------------------------------------------------------------------------------------------


def lama_loss(**kwargs) -> SCATAdversarialLoss:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return SCATAdversarialLoss(segmenter=tiny_seg(), **kwargs)


@pytest.mark.parametrize("value", [True, "1.0"])
def test_lama_weights_must_be_real_numbers(value) -> None:  # type: ignore[no-untyped-def]
    """A bool or a string weight is a TypeError naming the weight (not read as 1.0 or compared)."""
    with pytest.raises(TypeError, match=r"^lambda_text: expected a float, got "):
        lama_loss(lambda_text=value)


def test_lama_accepts_mean_semantic_pooling() -> None:
    """``semantic_pool="mean"`` is one of the documented choices."""
    assert lama_loss(semantic_pool="mean").semantic_pool == "mean"


def test_lama_accepts_a_one_dimensional_semantic_feature() -> None:
    """``feature_dim=1`` is a positive int: the projection head takes 1 input feature."""
    loss = lama_loss(semantic_layer="0", feature_dim=1, hidden_features=4, out_features=3)
    assert loss.feature_dim == 1
    first = next(m for m in loss.objective.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 1


def test_lama_range_error_comes_before_the_mask_convention_error() -> None:
    """Value checks run in order after one read: a ``[0, 255]`` batch with a valid mask reports the range first."""
    loss = lama_loss()
    real = torch.rand(B, 3, S, S, generator=torch.Generator().manual_seed(0)) * 255
    masks = holes()
    fake = masks * torch.rand_like(real) + (1 - masks) * real
    pred = torch.zeros(B, 1, S, S)
    with pytest.raises(ValueError, match=r"^real_batch: "):
        loss.generator_loss(real, fake, pred, pred, 1 - masks)


# ----------------------------------------------------------------------------------------------------------------------
# criterion: the release preset, global negatives
# ----------------------------------------------------------------------------------------------------------------------


def test_release_preset_without_semantic_layer_has_no_projection_head() -> None:
    """``in_features`` without a semantic layer builds no projection head (nothing would feed it)."""
    crit = SCATCriterion.release(nn.Conv2d(3, 1, 3), in_features=8)
    assert crit.semantic_layer is None
    assert list(crit.objective.parameters()) == []


def _fake_two_ranks(monkeypatch: pytest.MonkeyPatch, seen: list[torch.dtype]) -> None:
    """A two-rank world where the other rank sends exactly what this one sends."""

    def all_gather(parts, tensor, group=None):  # type: ignore[no-untyped-def]
        seen.append(tensor.dtype)
        for p in parts:
            p.copy_(tensor)

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    monkeypatch.setattr(dist, "all_gather", all_gather)


def test_global_negatives_gather_float64_soft_masks_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float64 soft mask travels as float64 (no float32 round trip); a bool mask travels as float32 and
    comes back bool. Returns both ranks' masks and this rank's offset."""
    seen: list[torch.dtype] = []
    _fake_two_ranks(monkeypatch, seen)
    crit = SCATCriterion(nn.Conv2d(3, 1, 3), segmenter=tiny_seg(), negatives_from="global")
    hole = torch.full((2, 1, 4, 4), 0.1, dtype=torch.float64)
    masks, offset = crit._gather_holes(hole)
    assert offset == 2 and masks.dtype == torch.float64
    assert torch.equal(masks, torch.full((4, 1, 4, 4), 0.1, dtype=torch.float64))
    assert seen[-1] == torch.float64
    bool_hole = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    bool_hole[0, 0, 1, 2] = True
    masks, offset = crit._gather_holes(bool_hole)
    assert seen[-1] == torch.float32  # all_gather backends (gloo, NCCL) need a numeric dtype
    assert offset == 1 and masks.dtype == torch.bool and torch.equal(masks, torch.cat([bool_hole, bool_hole]))


# ----------------------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------------------


def test_image_metrics_returns_ssim_in_the_metric_dtype() -> None:
    """On CPU every metric comes back in float64 (SSIM is computed in float32 and converted)."""
    pytest.importorskip("torchmetrics")
    out = torch.zeros(1, 3, 12, 12)
    metrics = ev.image_metrics(out, out + 0.5)
    assert metrics["l1"].dtype == torch.float64
    assert metrics["ssim"].dtype == torch.float64


def test_report_json_is_indented_by_two_spaces() -> None:
    """``to_json()`` defaults to ``indent=2``."""
    report = ev.EvaluationReport(
        buckets=(ev.BucketMetrics("0-20%", (0.0, 0.2), 1, 0.5, 20.0, 0.5),),
        n_images=1,
        masks_per_image=1,
        seed=0,
        fill=1.0,
        psnr_cap=100.0,
    )
    text = report.to_json()
    assert text == json.dumps(json.loads(text), indent=2)
    assert "\n  " in text


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images()


def test_detectability_kind_error_names_kind(images: torch.Tensor) -> None:
    """An unknown ``kind`` is a ValueError naming ``kind``."""
    with pytest.raises(ValueError, match=r"^kind: expected one of 'bce', 'hinge', 'ls', got 'wgan'"):
        ev.detectability(_identity, images, images, steps=1, batch_size=2, kind="wgan")


def test_detectability_accepts_hinge(images: torch.Tensor) -> None:
    """``kind="hinge"`` passes the kind check (the next check, on ``segmenter``, is the one that fails here)."""
    with pytest.raises(TypeError, match=r"^segmenter: "):
        ev.detectability(_identity, images, images, steps=1, batch_size=2, kind="hinge", segmenter=3)


def test_detectability_records_the_last_loss_to_six_decimals(images: torch.Tensor) -> None:
    """``probe["last_loss"]`` is the last training loss rounded to 6 decimals (a float, not an int)."""
    report = ev.detectability(_identity, images, images, steps=1, batch_size=2, segmenter=tiny_seg)
    last = report.probe["last_loss"]
    assert isinstance(last, float)
    assert 0.0 < last < 10.0 and last != round(last)
    assert last == round(last, 6)


# ----------------------------------------------------------------------------------------------------------------------
# functional: argument names, shapes, devices
# ----------------------------------------------------------------------------------------------------------------------


def test_adversarial_discriminator_loss_names_real_logits_and_kind() -> None:
    """A non-tensor ``real_logits`` and an unknown ``kind`` name themselves."""
    z = torch.zeros(2, 1)
    with pytest.raises(TypeError, match=r"^real_logits: expected a floating-point torch.Tensor"):
        SF.adversarial_discriminator_loss(z, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"^kind: expected one of "):
        SF.adversarial_discriminator_loss(z, z, kind="wgan")


def test_scat_segmenter_loss_checks_the_device_of_fake_logits() -> None:
    """Fake logits on another device than the real logits and the hole: the device-mismatch error lists them."""
    fake = torch.zeros(1, 1, 4, 4, device="meta")
    real = torch.zeros(1, 1, 4, 4)
    hole = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"^device mismatch: .*fake_logits on meta, real_logits on cpu, hole on cpu"):
        SF.scat_segmenter_loss(fake, real, hole, backend="torch")


def test_textural_loss_layer_count_error_lists_each_list() -> None:
    """Feature lists of different lengths: the documented message lists each list's count."""
    a = [torch.zeros(1, 2)]
    with pytest.raises(ValueError) as info:
        SF.textural_contrastive_loss(a, a * 2, a)
    assert str(info.value) == (
        "feature lists: expected the same number of layers in each, got anchor_feats has 1, positive_feats has 2, "
        "negative_feats has 1"
    )


def test_textural_loss_accepts_two_dimensional_features() -> None:
    """``(B, C)`` features (e.g. pooled) are valid: ``mean|a - p| / (mean|a - n| + eps)``, by hand 0.5 / 1."""
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    p = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    n = torch.tensor([[3.0, 2.0]], dtype=torch.float64)
    loss = SF.textural_contrastive_loss([a], [p], [n])
    assert float(loss) == pytest.approx(0.5 / (1.0 + 1e-7), rel=1e-12)


def test_resolve_backend_keeps_torch() -> None:
    """``ops.resolve_backend("torch", ...)`` is ``"torch"`` whatever the tensors and the interpreter."""
    assert ops.resolve_backend("torch", torch.zeros(2)) == "torch"


# ----------------------------------------------------------------------------------------------------------------------
# ops.torch_fused: gradients
# ----------------------------------------------------------------------------------------------------------------------


def test_infonce_gives_the_positive_its_gradient_when_negatives_need_none() -> None:
    """With only ``positive`` requiring grad, its gradient is the float64 InfoNCE gradient (no temperature,
    no normalisation): ``dL/dp = a (softmax_pos - 1)`` for one anchor."""
    a = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    p = torch.tensor([[0.1, 0.4, -0.3]], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([[[0.2, 0.2, 0.1], [-0.5, 0.3, 0.0]]], dtype=torch.float64)
    loss = SF.semantic_contrastive_loss(a, p, n, temperature=1.0, normalize=False, backend="torch")
    loss.backward()
    loss = loss.detach()
    logits = torch.cat([(a * p.detach()).sum(1, keepdim=True), (a[:, None] * n).sum(2)], dim=1)
    expected_loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-12)
    s_pos = torch.softmax(logits, dim=1)[:, :1]
    assert p.grad is not None
    torch.testing.assert_close(p.grad, a * (s_pos - 1.0), rtol=1e-12, atol=1e-15)


def test_segmenter_gradient_with_a_float32_soft_mask_on_float64_logits() -> None:
    """A grad-requiring float32 mask at the logits' resolution with float64 hinge logits: ``dL/dz_f`` is
    ``(h (1 + [|z| < 1]) - [z < 1]) / N`` with ``h`` taken in float64 from the float32 mask."""
    zf = torch.tensor([[[[0.5, -2.0], [0.2, 3.0]]]], dtype=torch.float64, requires_grad=True)
    zr = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    hole = torch.tensor([[[[1 / 3, 0.0], [0.7, 1.0]]]], dtype=torch.float32, requires_grad=True)
    SF.scat_segmenter_loss(zf, zr, hole, kind="hinge", backend="torch").backward()
    z = zf.detach()
    h = hole.detach().to(torch.float64)
    expected = (h * (1 + (z.abs() < 1).double()) - (z < 1).double()) / 4
    assert zf.grad is not None
    torch.testing.assert_close(zf.grad, expected, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [("0.1", 0.5), (0.1, 0.2, 0.3)])
def test_bucket_name_refuses_anything_but_a_pair_of_numbers(bucket) -> None:  # type: ignore[no-untyped-def]
    """A string bound or a triple is a TypeError naming ``bucket``."""
    with pytest.raises(TypeError, match=r"^bucket: expected a \(lo, hi\) pair of numbers"):
        masks_module.bucket_name(bucket)


def test_box_shape_has_the_documented_size() -> None:
    """``u0 < 0.25``: a box of ``round(h scale (0.05 + 0.3 u1)) x round(w scale (0.05 + 0.3 u2))`` at
    ``(int(u3 (h - bh + 1)), int(u4 (w - bw + 1)))``; here 8 x 2 at (16, 18) on a 40 x 48 image."""
    u = [0.1, 0.5, 0.0, 0.5, 0.4] + [0.5] * 19
    y0, y1, x0, x1, crop = masks_module._shape(u, 40, 48, 40.0, 1.0)
    bh, bw = round(40 * (0.05 + 0.15)), round(48 * 0.05)
    assert (bh, bw) == (8, 2)
    assert (y0, y1, x0, x1) == (int(0.5 * 33), int(0.5 * 33) + 8, int(0.4 * 47), int(0.4 * 47) + 2)
    assert crop.shape == (8, 2) and crop.all()


def test_brush_stroke_of_sub_pixel_segments() -> None:
    """Segments shorter than a pixel are still projected onto exactly (float64 re-computation)."""
    u = [0.5, 0.0, 0.153, 0.458, 0.028, 0.23, 0.177, 0.584, 0.861, 0.798] + [0.5] * 14
    h, w, side, scale = 10, 10, 10.0, 0.25
    expected, margin = _stroke_reference(u, h, w, side, scale)
    assert margin > 1e-3
    np.testing.assert_array_equal(_full_shape(u, h, w, side, scale), expected)
