"""Tests pinning behaviour that mutation testing found unchecked in ``scatloss.adapters``.

Each compares with an independent expectation written here: the argument an error names, the documented message
text, a hand-computed value (e.g. the InfoNCE of equal logits is ``log(1 + M)``), or which module gets used.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import scatloss.adapters
from scatloss.adapters import release as release_module
from scatloss.adapters._common import STEP_KEYWORD
from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.adapters.lama import SCATAdversarialLoss
from tests._pins import B, C, S, aot_images, composite, holes, patch_d, scat_d, tiny_seg

# ----------------------------------------------------------------------------------------------------------------------
# scatloss.adapters (lazy attributes) and _common
# ----------------------------------------------------------------------------------------------------------------------


def test_package_getattr_resolves_each_adapter_submodule() -> None:
    """The package's lazy ``__getattr__`` returns the aotgan / lama / release submodules by name."""
    for name in ("aotgan", "lama", "release"):
        module = scatloss.adapters.__getattr__(name)
        assert module.__name__ == f"scatloss.adapters.{name}"
    with pytest.raises(AttributeError, match="has no attribute 'LAMA'"):
        scatloss.adapters.__getattr__("LAMA")


def test_default_layers_error_lists_the_blocks_found() -> None:
    """With one conv block, the auto-detection error names that block's activation (``'1'``)."""
    one_block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3))
    with pytest.raises(ValueError, match=r"^discriminator: .* got Sequential with blocks '1'\. "):
        SCATDiscriminator(one_block, segmenter=tiny_seg())


def test_unwrap_names_none_as_none() -> None:
    """``netD=None`` is reported as ``got None``."""
    real = aot_images()
    with pytest.raises(TypeError, match=r"^netD: expected a SCATDiscriminator, got None; "):
        SCATGANLoss()(None, real, real, holes())


# ----------------------------------------------------------------------------------------------------------------------
# aotgan.SCATDiscriminator
# ----------------------------------------------------------------------------------------------------------------------


def test_scat_discriminator_in_channels_overrides_netd_channels() -> None:
    """``in_channels`` given: the default segmenter takes that many channels, not netD's first conv's (3)."""
    d = SCATDiscriminator(patch_d(), in_channels=1, hidden_features=4, out_features=3)
    out = d.segmenter(torch.zeros(1, 1, S, S))
    assert tuple(out.shape) == (1, 1, S, S)


def test_scat_discriminator_builds_segmenter_and_head_on_netd_device() -> None:
    """The default segmenter and the projection head are created on netD's device (here ``meta``)."""
    d = SCATDiscriminator(patch_d().to("meta"), hidden_features=4, out_features=3)
    assert d.projection is not None
    assert all(p.device.type == "meta" for p in d.segmenter.parameters())
    assert all(p.device.type == "meta" for p in d.projection.parameters())


def test_scat_discriminator_forward_hands_itself_to_a_step() -> None:
    """A step passed by the private keyword is called with the SCATDiscriminator itself and the other arguments."""
    d = scat_d()
    seen = []
    out = d(1, 2, k=3, **{STEP_KEYWORD: lambda *a, **kw: seen.append((a, kw)) or "done"})
    assert out == "done"
    assert seen == [((d, 1, 2), {"k": 3})]


def test_scat_discriminator_loads_partial_own_layout_non_strict() -> None:
    """A ``netD.*``-only state dict with ``strict=False`` loads netD and leaves the rest alone."""
    d = scat_d()
    new = {f"netD.{k}": torch.full_like(v, 0.25) for k, v in d.netD.state_dict().items()}
    seg_before = [p.detach().clone() for p in d.segmenter.parameters()]
    d.load_state_dict(new, strict=False)
    for v in d.netD.state_dict().values():
        assert torch.all(v == 0.25)
    assert all(torch.equal(a, b.detach()) for a, b in zip(seg_before, d.segmenter.parameters(), strict=True))


# ----------------------------------------------------------------------------------------------------------------------
# aotgan.SCATGANLoss
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lambda_rec", "lambda_text", "lambda_sem"])
def test_gan_loss_weight_errors_name_the_weight(name: str) -> None:
    """A negative weight raises ``ValueError`` naming that weight."""
    with pytest.raises(ValueError, match=rf"^{name}: expected a finite weight >= 0"):
        SCATGANLoss(**{name: -1.0})


def test_gan_loss_region_error_names_region() -> None:
    """An unknown ``region`` raises ``ValueError`` naming ``region``."""
    with pytest.raises(ValueError, match=r"^region: expected one of 'hole', 'all'"):
        SCATGANLoss(region="bad")


def test_gan_loss_accepts_global_negatives() -> None:
    """``negatives_from="global"`` is accepted and kept."""
    assert SCATGANLoss(negatives_from="global").negatives_from == "global"


def test_gan_loss_caches_one_criterion_per_discriminator() -> None:
    """Each SCATDiscriminator keeps its own cached criterion, also when another one is used in between."""
    loss = SCATGANLoss()
    d1, d2 = scat_d(), scat_d()
    c1 = loss.criterion(d1)
    c2 = loss.criterion(d2)
    assert c2 is not c1
    assert loss.criterion(d1) is c1
    assert loss.criterion(d2) is c2


def test_gan_loss_range_error_names_real_and_the_host() -> None:
    """``real`` in [0, 1] raises ``ValueError`` naming ``real`` and AOT-GAN's convention."""
    real = aot_images().abs()
    with pytest.raises(ValueError, match=r"^real: expected images in \[-1, 1\] \(AOT-GAN's convention\)"):
        SCATGANLoss()(scat_d(), composite(real, holes()).abs(), real, holes())


def test_gan_loss_mask_convention_error_names_the_host() -> None:
    """A valid mask (1 = known) raises ``ValueError`` naming ``masks`` and AOT-GAN's convention."""
    real, masks = aot_images(), holes()
    fake = composite(real, masks)
    with pytest.raises(ValueError, match=r"^masks: expected a hole mask \(1 = missing pixel, AOT-GAN's convention\)"):
        SCATGANLoss()(scat_d(), fake, real, 1 - masks)


def _equal_negatives_case(loss: SCATGANLoss, d: SCATDiscriminator) -> None:
    """``real`` constant ``-0.5`` and ``fill=-0.5``: every negative equals the positive, so the InfoNCE logits are
    all equal and ``L_sem = log(1 + B)`` (``negatives="batch"``: B negatives each), and each textural ratio is
    ``|a - p| / (|a - n| + 1e-7) = 1`` (to 1e-5), summed over the layers."""
    real = torch.full((B, C, S, S), -0.5, dtype=torch.float64)
    masks = holes().double()
    d.double()
    loss(d, composite(real, masks), real, masks)
    assert float(loss.last_terms["g_sem"]) == pytest.approx(math.log(1 + B), abs=1e-9)
    assert float(loss.last_terms["g_text"]) == pytest.approx(len(d.textural_layers), abs=1e-4)


def test_gan_loss_fill_reaches_the_criterion() -> None:
    """``fill`` is the hole value of the corrupted input and the negatives (hand-computed terms above)."""
    _equal_negatives_case(SCATGANLoss(fill=-0.5), scat_d())


def test_gan_loss_semantic_pool_reaches_the_criterion() -> None:
    """``semantic_pool="flatten"`` of the SCATDiscriminator is what the criterion pools with (head of C*h*w)."""
    d = scat_d(semantic_pool="flatten", feature_dim=4 * 3 * 3)
    _equal_negatives_case(SCATGANLoss(fill=-0.5), d)


def test_gan_loss_under_single_process_ddp_matches_the_plain_call() -> None:
    """A DDP-wrapped SCATDiscriminator (world size 1) gives the unwrapped call's losses: fake, real, masks all
    reach the step, which runs on the SCATDiscriminator."""
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    real, masks = aot_images(), holes()
    fake = composite(real, masks)
    d = scat_d()
    expected = SCATGANLoss()(d, fake, real, masks)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{Path(tmp) / 'store'}", rank=0, world_size=1)
        try:
            wrapped = nn.parallel.DistributedDataParallel(d)
            got = SCATGANLoss()(wrapped, fake, real, masks)
        finally:
            dist.destroy_process_group()
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# lama.SCATAdversarialLoss
# ----------------------------------------------------------------------------------------------------------------------


def lama_loss(**kwargs) -> SCATAdversarialLoss:
    torch.manual_seed(0)
    return SCATAdversarialLoss(segmenter=tiny_seg(), **kwargs)


def lama_images(b: int = B) -> torch.Tensor:
    return torch.rand(b, C, S, S, generator=torch.Generator().manual_seed(2))


def test_lama_lambda_text_error_names_lambda_text() -> None:
    """A negative ``lambda_text`` raises ``ValueError`` naming ``lambda_text``."""
    with pytest.raises(ValueError, match=r"^lambda_text: expected a value >= 0"):
        SCATAdversarialLoss(lambda_text=-1.0)


def test_lama_feature_dim_error_reports_none() -> None:
    """A semantic layer without ``feature_dim`` or a discriminator: the error reports ``got None``."""
    with pytest.raises(ValueError, match=r"^feature_dim: .* got None; pass feature_dim="):
        SCATAdversarialLoss(semantic_layer="model3")


def test_lama_construction_discriminator_is_not_replaced_by_pre_step() -> None:
    """A discriminator given at construction is the one tapped; ``pre_generator_step(discriminator=other)`` keeps it."""
    torch.manual_seed(0)
    d1, d2 = patch_d(), patch_d()
    calls = {"d1": 0, "d2": 0}
    d1.register_forward_pre_hook(lambda *_: calls.__setitem__("d1", calls["d1"] + 1))
    d2.register_forward_pre_hook(lambda *_: calls.__setitem__("d2", calls["d2"] + 1))
    loss = lama_loss(discriminator=d1, textural_layers=("1", "3"))
    real, masks = lama_images(), holes()
    fake = masks * torch.rand_like(real) + (1 - masks) * real
    loss.pre_generator_step(real, fake, nn.Identity(), d2)
    pred = torch.zeros(B, 1, S, S)
    loss.generator_loss(real, fake, pred, pred, masks)
    assert calls["d1"] > 0
    assert calls["d2"] == 0


def test_lama_criterion_is_built_once() -> None:
    """``criterion()`` is built on first use and then reused."""
    loss = lama_loss()
    assert loss.criterion() is loss.criterion()


def test_lama_mask_batch_error_names_mask() -> None:
    """A mask whose batch differs from ``real_batch`` raises ``ValueError`` naming ``mask``."""
    loss = lama_loss()
    real = lama_images(3)
    pred = torch.zeros(3, 1, S, S)
    with pytest.raises(ValueError, match=r"^mask: expected batch size 3 to match the other inputs, got 1"):
        loss.generator_loss(real, real, pred, pred, holes(1))


def test_lama_shape_errors_come_before_value_checks() -> None:
    """The mask's values are read with the call's other value checks, after every shape check: a mask both out of
    [0, 1] and of the wrong spatial size gets the spatial-size error."""
    loss = lama_loss()
    real = lama_images()
    bad = torch.full((B, 1, S // 2, S // 2), 2.0)
    pred = torch.zeros(B, 1, S, S)
    with pytest.raises(ValueError, match=r"^mask: expected the spatial size of real_batch"):
        loss.generator_loss(real, real, pred, pred, bad)


def test_lama_mask_convention_error_names_lama() -> None:
    """A valid mask (1 = known) raises ``ValueError`` naming LaMa's convention."""
    loss = lama_loss()
    real, masks = lama_images(), holes()
    fake = masks * torch.rand_like(real) + (1 - masks) * real
    pred = torch.zeros(B, 1, S, S)
    with pytest.raises(ValueError, match=r"^mask: expected a hole mask \(1 = missing pixel, LaMa's convention\)"):
        loss.generator_loss(real, fake, pred, pred, 1 - masks)


def test_lama_discriminator_loss_adds_the_r1_penalty() -> None:
    """``loss = mean(softplus(-D(real)) + softplus(D(fake))) + gp_coef * mean_b |grad D(real)|^2 + L_SCAT(S)``;
    with ``D(real) = 2 * real[:, :1]`` the squared gradient norm is ``4 * H * W`` per sample."""
    loss = lama_loss(gp_coef=0.001)
    real, masks = lama_images().double(), holes().double()
    loss.double()
    fake = masks * torch.rand_like(real) + (1 - masks) * real
    loss.pre_discriminator_step(real, fake, nn.Identity(), nn.Identity())
    real_pred = 2 * real[:, :1]
    fake_pred = torch.linspace(-2, 2, B * S * S, dtype=torch.float64).view(B, 1, S, S)
    total, metrics = loss.discriminator_loss(real, fake, real_pred, fake_pred, masks)
    gp = 0.001 * 4 * S * S
    adv = (F.softplus(-real_pred.detach()) + F.softplus(fake_pred)).mean() + gp
    assert float(metrics["discr_real_gp"]) == pytest.approx(gp, rel=1e-12)
    assert float((total - metrics["scat_seg"]).detach()) == pytest.approx(float(adv), rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# release
# ----------------------------------------------------------------------------------------------------------------------


def test_release_d_checks_fake_is_4d() -> None:
    """``dualadv.D`` with a 3-D ``fake`` raises ``ValueError`` naming ``fake`` before running netD."""
    adv = release_module.dualadv(SimpleNamespace())
    real = aot_images()
    with pytest.raises(ValueError, match=r"^fake: expected a 4-D tensor"):
        adv.D(None, real[0], real, 1 - holes())


def test_release_g_checks_the_mask_batch_under_its_name() -> None:
    """``dualadv.G`` with a mask of another batch size raises ``ValueError`` naming the valid masks."""
    adv = release_module.dualadv(SimpleNamespace())
    fake = aot_images()
    with pytest.raises(ValueError, match=r"^masks \(valid, 1 = known\): expected batch size 2 to match"):
        adv.G(None, fake, 1 - holes(1))


def test_release_contrastive_names_predict_result() -> None:
    """``Contrastive`` with a 3-D ``predict_result`` raises ``ValueError`` naming ``predict_result``."""
    loss = release_module.Contrastive(SimpleNamespace(), nn.Conv2d(3, 1, 1), True)
    x = aot_images()
    with pytest.raises(ValueError, match=r"^predict_result: expected a 4-D tensor"):
        loss(x, x[0], x, holes())
