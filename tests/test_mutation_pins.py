"""Tests that pin behaviour a mutation run found unguarded (see ``benchmarks/mutation/README.md``).

Each compares with an independent computation written here, on inputs where the mutant's result differs:

* ``evaluate`` scores the **composite**, not the raw prediction: a generator whose raw output is wrong only
  where the pixels are known scores like a perfect one;
* LaMa's generator-side options ``use_unmasked_for_gen`` and ``extra_mask_weight_for_gen`` weigh the global
  term's patches as LaMa's ``NonSaturatingWithR1`` does (mask resized by nearest neighbour).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.nets import UNetSegmenter

# ----------------------------------------------------------------------------------------------------------------------
# evaluate: the composite is scored
# ----------------------------------------------------------------------------------------------------------------------


def test_evaluate_scores_the_composite_not_the_raw_prediction() -> None:
    pytest.importorskip("torchmetrics")
    from scatloss import evaluate as ev

    g = torch.Generator().manual_seed(0)
    images = (F.avg_pool2d(torch.rand(3, 3, 40, 40, generator=g), 5, stride=1, padding=2) * 2 - 1).clamp(-1, 1)
    raw_error: list[float] = []

    def right_in_holes_only(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        truth = images[: corrupted.shape[0]]
        prediction = hole * truth + (1 - hole) * (-truth)  # the known pixels are wrong in the raw output
        raw_error.append(float((prediction - truth).abs().mean()))
        return prediction

    report = ev.evaluate(right_in_holes_only, images, batch_size=len(images))
    assert raw_error and min(raw_error) > 0.1  # scoring the raw prediction would see this error
    assert sum(b.count for b in report.buckets) == len(images) * len(report.buckets)
    for bucket in report.buckets:
        assert bucket.l1 == 0.0
        assert bucket.psnr == ev.PSNR_CAP and bucket.psnr_capped == bucket.count
        assert bucket.ssim == pytest.approx(1.0)


def test_evaluate_composite_error_is_the_hole_share_of_the_prediction_error() -> None:
    """A prediction off by ``d`` everywhere: the composite's l1 ([0, 1] units) is ``d / 2`` times the hole ratio."""
    pytest.importorskip("torchmetrics")
    from scatloss import evaluate as ev

    images = torch.full((2, 3, 32, 32), -0.5)
    ratios: list[torch.Tensor] = []

    def offset(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        ratios.append(hole.mean(dim=(1, 2, 3)).double())
        return images[: corrupted.shape[0]] + 0.6

    report = ev.evaluate(offset, images, batch_size=2, buckets=((0.0, 0.3), (0.3, 0.7)))
    assert len(ratios) == 2
    for bucket, r in zip(report.buckets, ratios, strict=True):
        assert bucket.count == 2
        assert bucket.l1 == pytest.approx(float((0.3 * r).mean()), rel=1e-6)  # float32 images
        assert not math.isclose(bucket.l1, 0.3, rel_tol=1e-3)  # what the raw prediction would score


# ----------------------------------------------------------------------------------------------------------------------
# LaMa: generator-side weighting of the global term
# ----------------------------------------------------------------------------------------------------------------------


def _lama_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    real = torch.rand(2, 3, 32, 32, generator=g)
    mask = torch.zeros(2, 1, 32, 32)
    mask[0, :, 3:20, 5:17] = 1.0
    mask[1, :, 10:30, 2:28] = 1.0
    fake = mask * torch.rand(2, 3, 32, 32, generator=g) + (1 - mask) * real
    fake_pred = torch.randn(2, 1, 9, 9, generator=g) * 2
    return real, fake, fake_pred, mask


@pytest.mark.parametrize(
    ("options", "weights"),
    [
        ({}, lambda m: torch.ones_like(m)),
        ({"use_unmasked_for_gen": False, "use_unmasked_for_discr": False}, lambda m: m),
        (
            {"use_unmasked_for_gen": False, "use_unmasked_for_discr": False, "extra_mask_weight_for_gen": 3.0},
            lambda m: m,
        ),
        ({"mask_as_fake_target": True, "extra_mask_weight_for_gen": 2.5}, lambda m: 1 + 2.5 * m),
        ({"mask_as_fake_target": False, "extra_mask_weight_for_gen": 2.5}, lambda m: torch.ones_like(m)),
    ],
    ids=["default", "masked-only", "masked-only-wins", "extra-weight", "extra-weight-needs-mask-target"],
)
def test_lama_generator_patch_weights(options: dict, weights) -> None:
    real, fake, fake_pred, mask = _lama_inputs()
    torch.manual_seed(0)
    loss = SCATAdversarialLoss(
        segmenter=UNetSegmenter(3, base_channels=4, depth=2), weight=3.0, allow_scale_mask=True, **options
    )
    total, metrics = loss.generator_loss(real, fake, fake_pred, fake_pred, mask)
    m = F.interpolate(mask, size=fake_pred.shape[-2:], mode="nearest")  # LaMa's interpolate_mask
    assert 0 < float(m.mean()) < 1
    want = (F.softplus(-fake_pred) * weights(m)).mean()
    torch.testing.assert_close(metrics["gen_adv_term"], want, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(total, 3.0 * want + 3.0 * metrics["scat_gen"], rtol=1e-6, atol=0.0)
