"""Tests pinning behaviour that mutation testing found unchecked in the adapters (_common, aotgan, lama, release)
and in scatloss.evaluate (group s4a)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from scatloss import evaluate as ev
from scatloss.adapters import release as release_module
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import holes, scat_d, smooth_images, tiny_seg
from tests.test_adapters_release import ReleaseLikeD


def _identity(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return corrupted


# ---- adapters: construction options -----------------------------------------------------------------------------


def test_lama_accepts_one_negative() -> None:
    """``negatives=1`` is a valid M (>= 1)."""
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), negatives=1)
    assert loss.negatives == 1


def test_aotgan_semantic_pool_error_names_semantic_pool() -> None:
    """An unknown ``semantic_pool`` is a ValueError naming ``semantic_pool``."""
    with pytest.raises(ValueError, match=r"^semantic_pool: "):
        scat_d(semantic_pool="max")


def test_aotgan_rejects_feature_dim_zero() -> None:
    """``feature_dim=0`` is rejected (a positive int is needed for the projection head)."""
    with pytest.raises(ValueError, match=r"^feature_dim: expected a positive int"):
        scat_d(feature_dim=0)


def test_lama_default_out_features_is_256() -> None:
    """The projection head's output width defaults to 256 (the release's head width)."""
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), semantic_layer="x", feature_dim=5, hidden_features=4)
    assert loss.objective.semantic.projection[-1].out_features == 256


# ---- LaMa: argument names and the mask's dtype ----------------------------------------------------------------------


def _lama_batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mask = holes().to(dtype)
    real = smooth_images()[:2].to(dtype) * 0.5 + 0.5
    fake = mask * 0.25 + (1 - mask) * real
    return real, fake, mask


def test_lama_check_names_real_batch() -> None:
    """A 3-D ``real_batch`` and an out-of-range one are errors naming ``real_batch``."""
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), check_mask=False, gp_coef=0.0)
    real, fake, mask = _lama_batch()
    pred = torch.zeros(2, 1, 2, 2)
    with pytest.raises((TypeError, ValueError), match=r"^real_batch: "):
        loss.discriminator_loss(real[0], fake, pred, pred, mask)
    with pytest.raises(ValueError, match=r"^real_batch: "):
        loss.discriminator_loss(real * 4.0, fake, pred, pred, mask)


def test_lama_discriminator_loss_names_discr_fake_pred() -> None:
    """A (logits, features) tuple as ``discr_fake_pred`` is a TypeError naming ``discr_fake_pred``."""
    loss = SCATAdversarialLoss(segmenter=tiny_seg(), gp_coef=0.0)
    real, fake, mask = _lama_batch()
    pred = torch.zeros(2, 1, 2, 2)
    with pytest.raises(TypeError, match=r"^discr_fake_pred: "):
        loss.discriminator_loss(real, fake, pred, (pred, []), mask)


def test_lama_mask_takes_the_patch_maps_dtype() -> None:
    """A float64 mask is cast to the float32 patch map's dtype: the masked adversarial term stays float32."""
    loss = SCATAdversarialLoss(
        segmenter=tiny_seg(), gp_coef=0.0, use_unmasked_for_gen=False, use_unmasked_for_discr=False
    )
    real, fake, _ = _lama_batch()
    mask = holes().double()
    pred = torch.full((2, 1, 16, 16), 0.5)
    _, metrics = loss.generator_loss(real, fake, pred, pred, mask)
    assert metrics["gen_adv_term"].dtype == torch.float32
    want = (F.softplus(-pred.double()) * mask).mean()
    torch.testing.assert_close(metrics["gen_adv_term"].double(), want, rtol=1e-6, atol=1e-7)


# ---- release adapter -------------------------------------------------------------------------------------------------


def _release_setup():
    torch.manual_seed(0)
    netD = ReleaseLikeD().double().eval()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.float64)
    masks[:, :, 4:20, 6:22] = 1.0
    comp = images * (1 - masks) + masks * torch.rand(images.shape, generator=gen, dtype=torch.float64)
    return netD, images, masks, comp


def test_release_g_uses_globalgan_type() -> None:
    """``globalgan_type="nsgan"``: G's global term is the non-saturating ``mean softplus(-D(comp))``."""
    netD, _, masks, comp = _release_setup()
    adv = release_module.dualadv(SimpleNamespace(globalgan_type="nsgan", SCAT_type="hingegan"))
    g_adv, _ = adv.G(netD, comp, 1 - masks)
    with torch.no_grad():
        _, _, g_global, _ = netD(comp)
    torch.testing.assert_close(g_adv.detach(), F.softplus(-g_global).mean(), rtol=1e-9, atol=1e-12)


def test_release_contrastive_without_g_leaves_d_without_gradient() -> None:
    """Contrastive on a composite G did not see runs its own anchor pass with D's parameters frozen."""
    netD, images, masks, comp = _release_setup()
    comp = comp.clone().requires_grad_(True)
    contrastive = release_module.Contrastive(SimpleNamespace(), netD, input_dim=32, mlp_dim=16)
    text, sem = contrastive(images * (1 - masks) + masks, comp, images, masks, 5)
    (text + sem).backward()
    assert all(p.grad is None for p in netD.parameters())
    assert comp.grad is not None
    assert all(p.requires_grad for p in netD.parameters())


# ---- evaluate ---------------------------------------------------------------------------------------------------


def test_image_metrics_clips_the_target_to_one() -> None:
    """A target above 1 maps (after ``(x + 1) / 2``) to 1, like the output: L1 is 0 for output 1, target 3."""
    pytest.importorskip("torchmetrics")
    output = torch.ones(1, 3, 16, 16)
    target = torch.full((1, 3, 16, 16), 3.0)
    metrics = ev.image_metrics(output, target)
    assert float(metrics["l1"][0]) == 0.0
    assert bool(metrics["psnr_capped"][0])


def _report() -> ev.EvaluationReport:
    return ev.EvaluationReport(buckets=(), n_images=1, masks_per_image=1, seed=3, scatloss_version="x")


def test_evaluation_report_to_json_indents_by_two() -> None:
    """``to_json()`` indents by 2 by default."""
    text = _report().to_json()
    assert '\n  "n_images": 1,' in text


def _confusion(auroc: float | None = 0.5) -> ev.ConfusionReport:
    bucket = ev.ConfusionBucket(name="all", bounds=(0.0, 1.0), count=1, auroc=auroc, ap=0.5, iou=None)
    return ev.ConfusionReport(buckets=(), overall=bucket, threshold=0.5, n_images=1, masks_per_image=1, seed=4)


def test_confusion_report_to_json_is_its_dict() -> None:
    """``ConfusionReport.to_json`` writes ``to_dict()``."""
    data = json.loads(_confusion().to_json())
    assert data["seed"] == 4 and data["overall"]["auroc"] == 0.5 and data["overall"]["bounds"] == [0.0, 1.0]


def test_confusion_report_to_json_is_strict() -> None:
    """A NaN score is refused (strict JSON, ``allow_nan=False``)."""
    with pytest.raises(ValueError):
        _confusion(float("nan")).to_json()


def test_evaluate_records_the_seed() -> None:
    """The report's ``seed`` is the seed passed."""
    pytest.importorskip("torchmetrics")
    report = ev.evaluate(_identity, smooth_images()[:1], buckets=((0.1, 0.3),), seed=7)
    assert report.seed == 7


def test_build_fid_loads_the_given_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The Inception extractor is loaded from the ``fid_weights`` path."""
    pytest.importorskip("torchmetrics")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stand-in")
    seen: list[object] = []

    def load(path: Path) -> torch.nn.Module:
        seen.append(path)
        raise RuntimeError("stop")

    monkeypatch.setattr(ev, "_torch_fidelity_available", lambda: True)
    monkeypatch.setattr(ev, "_load_inception", load)
    metrics, status = ev._build_fid(weights, 1, torch.device("cpu"))
    assert metrics is None and status.startswith("unavailable: could not load")
    assert seen == [Path(weights)]


def test_segmenter_p_generated_accepts_probability_one() -> None:
    """``output="prob_generated"`` accepts exactly 0 and 1 (the closed interval)."""
    images = torch.zeros(1, 3, 4, 4)
    probs = torch.zeros(1, 1, 4, 4)
    probs[..., 0, 0] = 1.0
    out = ev.segmenter_p_generated(lambda x: probs, images, output="prob_generated")
    assert torch.equal(out, probs)


def test_default_probe_depth() -> None:
    """The default probe's depth is the number of halvings both sides allow, at most 4."""
    assert ev._default_probe(3, 64, 64).depth == 4
    assert ev._default_probe(3, 6, 8).depth == 1
    assert ev._default_probe(3, 12, 8).depth == 2
