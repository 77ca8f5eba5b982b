"""Host adapters, driven exactly the way their hosts call them (AOT-GAN's trainer step, LaMa's loss protocol).

The stand-in networks copy the hosts' layouts at toy sizes: AOT-GAN's SN-PatchGAN (``self.conv`` Sequential of
``torch.nn.utils.spectral_norm`` convs and ``LeakyReLU(0.2, inplace=True)``), LaMa's ``NLayerDiscriminator``
(``model0``, ``model1``, ... blocks with BatchNorm and in-place LeakyReLU, returning ``(logits, features)``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

import scatloss
from scatloss import functional as SF
from scatloss.adapters._common import inverted_hole_samples
from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.nets import UNetSegmenter

B, C, H, W = 3, 3, 32, 32
WIDTH = 4


# --------------------------------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------------------------------


class AOTDiscriminator(nn.Module):
    """AOT-GAN's discriminator at toy width: SN convs (strides 2, 2, 2, 1), in-place LeakyReLU, a logit conv."""

    def __init__(self, c: int = WIDTH) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            spectral_norm(nn.Conv2d(3, c, 4, stride=2, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(4 * c, 8 * c, 4, stride=1, padding=1, bias=False)),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * c, 1, 4, stride=1, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TinyGenerator(nn.Module):
    """``(masked image, hole) -> image``; ``out`` is tanh (AOT-GAN, [-1, 1]) or sigmoid (LaMa, [0, 1])."""

    def __init__(self, out: Callable[[torch.Tensor], torch.Tensor] = torch.tanh) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.out = out

    def forward(self, masked: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(torch.cat([masked, hole], dim=1)))


class LaMaDiscriminator(nn.Module):
    """LaMa's NLayerDiscriminator at toy width: ``model0..model3`` blocks, returns ``(logits, [block outputs])``."""

    def __init__(self, c: int = WIDTH) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.Conv2d(3, c, 4, 2, 2), nn.LeakyReLU(0.2, True))
        self.model1 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, 2, 2), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, True))
        self.model2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 4, 1, 2), nn.BatchNorm2d(4 * c), nn.LeakyReLU(0.2, True))
        self.model3 = nn.Sequential(nn.Conv2d(4 * c, 1, 4, 1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in (self.model0, self.model1, self.model2, self.model3):
            x = block(x)
            feats.append(x)
        return x, feats[:-1]


def tiny_segmenter() -> UNetSegmenter:
    return UNetSegmenter(3, base_channels=4, depth=2)


def hole_masks(b: int = B) -> torch.Tensor:
    masks = torch.zeros(b, 1, H, W)
    for i in range(b):
        masks[i, :, 4 + 3 * i : 18 + 2 * i, 6 : 20 + 3 * i] = 1.0
    return masks


def aot_images(b: int = B) -> torch.Tensor:
    return torch.rand(b, C, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1


def lama_images(b: int = B) -> torch.Tensor:
    return torch.rand(b, C, H, W, generator=torch.Generator().manual_seed(2))


def snapshot(params: Iterator[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def changed(before: list[torch.Tensor], params: Iterator[nn.Parameter]) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


# --------------------------------------------------------------------------------------------------
# AOT-GAN: the trainer step, literally
# --------------------------------------------------------------------------------------------------


def aot_setup(**loss_kwargs: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    netG = TinyGenerator()
    optimG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))
    netD = SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter(), hidden_features=16, out_features=8)
    optimD = torch.optim.Adam(netD.parameters(), lr=1e-3, betas=(0.5, 0.999))
    optimG.add_param_group({"params": list(netD.generator_parameters())})
    adv_loss = SCATGANLoss(**loss_kwargs)
    return {"netG": netG, "netD": netD, "optimG": optimG, "optimD": optimD, "adv_loss": adv_loss}


def aot_step(
    s: dict[str, Any],
    images: torch.Tensor,
    masks: torch.Tensor,
    adv_weight: float = 0.01,
    after_adv_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    before_optimD_step: Callable[[], None] | None = None,
    optimG_step_first: bool = True,
) -> dict[str, torch.Tensor]:
    """One iteration of AOT-GAN's trainer, in its order.

    ``optimG_step_first``: ``optimG.step()`` between the two backward passes (the order we were given); ``False``:
    both backward passes, then both steps (the other order AOT-GAN versions may use). Both must be correct.
    """
    netG, netD, optimG, optimD, adv_loss = s["netG"], s["netD"], s["optimG"], s["optimD"], s["adv_loss"]
    images_masked = (images * (1 - masks).float()) + masks
    pred_img = netG(images_masked, masks)
    comp_img = (1 - masks) * images + masks * pred_img
    losses = {"l1": (pred_img - images).abs().mean()}
    dis_loss, gen_loss = adv_loss(netD, comp_img, images, masks)
    if after_adv_loss is not None:
        after_adv_loss(comp_img, dis_loss, gen_loss)
    losses["advg"] = gen_loss * adv_weight
    optimG.zero_grad()
    optimD.zero_grad()
    sum(losses.values()).backward()
    if optimG_step_first:
        optimG.step()
    dis_loss.backward()
    if not optimG_step_first:
        optimG.step()
    if before_optimD_step is not None:
        before_optimD_step()
    optimD.step()
    return {"dis_loss": dis_loss.detach(), "gen_loss": gen_loss.detach()}


def test_aotgan_trainer_step_trains_every_part_with_its_own_optimiser() -> None:
    s = aot_setup(host_adv_weight=0.01)
    netD, netG = s["netD"], s["netG"]
    before = {
        "G": snapshot(netG.parameters()),
        "D": snapshot(netD.netD.parameters()),
        "S": snapshot(netD.segmenter.parameters()),
        "head": snapshot(netD.generator_parameters()),
    }
    out = aot_step(s, aot_images(), hole_masks())
    assert torch.isfinite(out["dis_loss"]) and torch.isfinite(out["gen_loss"])
    assert changed(before["G"], netG.parameters())
    assert changed(before["D"], netD.netD.parameters())
    assert changed(before["S"], netD.segmenter.parameters()), "optimD = Adam(netD.parameters()) must train S"
    assert changed(before["head"], netD.generator_parameters()), "optimG must train the projection head"
    assert set(s["adv_loss"].last_terms) == {"d_adv", "d_scat", "g_adv", "g_scat", "g_text", "g_sem"}
    # a second step on the same objects (cached criterion) works too
    assert torch.isfinite(aot_step(s, aot_images(), hole_masks())["gen_loss"])


@pytest.mark.parametrize("optimG_step_first", [True, False], ids=["optimG-step-between-backwards", "backwards-first"])
def test_aotgan_discriminator_update_is_the_gradient_of_dis_loss_alone(optimG_step_first: bool) -> None:
    """gen_loss is backpropagated first, after optimD.zero_grad(): it must leave no gradient in D or S."""
    s = aot_setup(host_adv_weight=0.01)
    netD = s["netD"]
    d_params = list(netD.parameters())  # netD's and the segmenter's, exactly what optimD holds
    d_copy, s_copy = copy.deepcopy(netD.netD), copy.deepcopy(netD.segmenter)  # same weights and SN vectors
    images, masks = aot_images(), hole_masks()
    seen: dict[str, Any] = {}

    def after_adv_loss(comp: torch.Tensor, dis_loss: torch.Tensor, gen_loss: torch.Tensor) -> None:
        seen["comp"] = comp.detach().clone()
        seen["dis_loss"] = dis_loss.detach().clone()
        seen["from_gen"] = torch.autograd.grad(gen_loss, d_params, allow_unused=True, retain_graph=True)

    def before_optimD_step() -> None:
        seen["grads"] = [p.grad.clone() for p in d_params]

    aot_step(
        s,
        images,
        masks,
        after_adv_loss=after_adv_loss,
        before_optimD_step=before_optimD_step,
        optimG_step_first=optimG_step_first,
    )
    assert all(g is None for g in seen["from_gen"]), "gen_loss has a graph into D's or S's parameters"

    # Manual recomputation from the equations, in the adapter's order (fake then real: spectral norm's power
    # iteration advances per forward), on copies taken before the step.
    comp, hole = seen["comp"], masks
    valid = 1 - hole
    d_fake, d_real = d_copy(comp), d_copy(images)
    s_fake, s_real = s_copy(comp), s_copy(images)
    dis_ref = (
        F.relu(1 - d_real).mean()
        + F.relu(1 + d_fake).mean()
        + F.relu(1 - s_real).mean()
        + (F.relu(1 - s_fake) * valid).mean()
        + (F.relu(1 + s_fake) * hole).mean()
    )
    ref_params = [*d_copy.parameters(), *s_copy.parameters()]
    ref_grads = torch.autograd.grad(dis_ref, ref_params)
    torch.testing.assert_close(seen["dis_loss"], dis_ref.detach(), rtol=1e-5, atol=1e-6)
    assert len(ref_grads) == len(seen["grads"])
    for got, want in zip(seen["grads"], ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("host_rec_weight", [1.0, 2.5])
def test_aotgan_gen_loss_combines_with_the_hosts_weights_into_eq8(host_rec_weight: float) -> None:
    """gen_loss * adv_weight == adv_weight * (adv + scat) + (w_rec / 10) * (10 * text + 1 * sem): the paper's
    lambda_text : lambda_sem : lambda_rec = 10 : 1 : 10, carried over relative to the host's L1 weight w_rec."""
    adv_weight = 0.01
    s = aot_setup(host_adv_weight=adv_weight, host_rec_weight=host_rec_weight, lambda_text=10.0, lambda_sem=1.0)
    images, masks = aot_images(), hole_masks()
    comp = (1 - masks) * images + masks * s["netG"](images * (1 - masks) + masks, masks)
    dis_loss, gen_loss = s["adv_loss"](s["netD"], comp, images, masks)
    t = s["adv_loss"].last_terms
    torch.testing.assert_close(
        gen_loss.detach() * adv_weight,
        adv_weight * (t["g_adv"] + t["g_scat"]) + host_rec_weight / 10.0 * (10.0 * t["g_text"] + t["g_sem"]),
    )
    torch.testing.assert_close(dis_loss.detach(), t["d_adv"] + t["d_scat"])
    assert "g_rec" not in t  # the host has its own L1


def test_scat_discriminator_is_still_the_hosts_discriminator() -> None:
    torch.manual_seed(0)
    inner = AOTDiscriminator()
    scat_d = SCATDiscriminator(inner, segmenter=tiny_segmenter())
    x = aot_images()
    inner.eval()
    assert torch.equal(scat_d(x), inner(x))
    assert scat_d.textural_layers == ("conv.1", "conv.3", "conv.5")
    assert scat_d.semantic_layer == "conv.7" and scat_d.feature_dim == 8 * WIDTH
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(scat_d.parameters()) == ids(inner.parameters()) | ids(scat_d.segmenter.parameters())
    assert ids(scat_d.generator_parameters()) == ids(scat_d.projection.parameters())
    assert not ids(scat_d.parameters()) & ids(scat_d.generator_parameters())
    keys = scat_d.state_dict().keys()
    assert any(k.startswith("projection.") for k in keys) and any(k.startswith("segmenter.") for k in keys)


def test_scat_discriminator_without_contrastive_terms_has_no_head() -> None:
    s = aot_setup()
    s["netD"] = SCATDiscriminator(
        AOTDiscriminator(), segmenter=tiny_segmenter(), textural_layers=(), semantic_layer=None
    )
    s["optimD"] = torch.optim.Adam(s["netD"].parameters())
    assert list(s["netD"].generator_parameters()) == []
    aot_step(s, aot_images(), hole_masks())
    assert set(s["adv_loss"].last_terms) == {"d_adv", "d_scat", "g_adv", "g_scat"}


def test_tapping_a_conv_overwritten_by_an_inplace_activation_is_refused() -> None:
    s = aot_setup()
    s["netD"] = SCATDiscriminator(
        AOTDiscriminator(), segmenter=tiny_segmenter(), textural_layers=("conv.0",), semantic_layer=None
    )
    with pytest.raises(RuntimeError, match="in place"):
        aot_step(s, aot_images(), hole_masks())


@pytest.mark.parametrize(
    ("make_images", "match"),
    [
        (lambda: (aot_images() + 1) / 2, r"looks like \[0, 1\]"),
        (lambda: (aot_images() + 1) * 127.5, r"\[0, 255\]"),
    ],
    ids=["zero-one", "uint8-scale"],
)
def test_aotgan_wrong_value_range_raises(make_images: Callable[[], torch.Tensor], match: str) -> None:
    s = aot_setup()
    with pytest.raises(ValueError, match=match):
        aot_step(s, make_images(), hole_masks())


def test_aotgan_valid_mask_instead_of_hole_mask_raises() -> None:
    s = aot_setup()
    images, hole = aot_images(), hole_masks()
    comp = (1 - hole) * images + hole * s["netG"](images * (1 - hole) + hole, hole)
    with pytest.raises(ValueError, match=r"valid mask \(1 = known pixel\)"):
        s["adv_loss"](s["netD"], comp, images, 1 - hole)


def test_aotgan_checks_can_be_switched_off() -> None:
    images, hole = aot_images(), hole_masks()
    s = aot_setup(check_range=False, check_mask=False)
    comp = (1 - hole) * images + hole * s["netG"](images * (1 - hole) + hole, hole)
    inverted = (s["netD"], comp.detach(), images, 1 - hole)
    zero_one = (s["netD"], (comp.detach() + 1) / 2, (images + 1) / 2, hole)
    for args in (inverted, zero_one):  # not checked: the terms come back, finite
        assert all(torch.isfinite(t) and t.dim() == 0 for t in s["adv_loss"](*args))
    strict = SCATGANLoss()
    with pytest.raises(ValueError, match=r"valid mask \(1 = known pixel\)"):
        strict(*inverted)
    with pytest.raises(ValueError, match=r"looks like \[0, 1\]"):
        strict(*zero_one)
    with scatloss.value_checks(False):  # the global switch turns off a loss built with checks on
        assert all(torch.isfinite(t) for t in strict(*zero_one))
    with pytest.raises(ValueError, match=r"looks like \[0, 1\]"):  # and back on after the block
        strict(*zero_one)


def test_aotgan_loss_refuses_an_unwrapped_or_parallel_discriminator() -> None:
    s = aot_setup()
    images, hole = aot_images(), hole_masks()
    with pytest.raises(TypeError, match="SCATDiscriminator"):
        s["adv_loss"](AOTDiscriminator(), images, images, hole)
    with pytest.raises(TypeError, match="got a DataParallel wrapper"):
        s["adv_loss"](nn.DataParallel(s["netD"]), images, images, hole)


def test_scat_discriminator_without_activation_modules_asks_for_layer_names() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(F.leaky_relu(self.a(x)))

    with pytest.raises(ValueError, match="Pass textural_layers"):
        SCATDiscriminator(Functional(), segmenter=tiny_segmenter())
    scat_d = SCATDiscriminator(Functional(), segmenter=tiny_segmenter(), textural_layers=(), semantic_layer="a")
    assert scat_d.feature_dim == 4


def test_hole_convention_check_never_flags_a_correct_composite() -> None:
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(8, C, H, W, generator=gen) * 2 - 1
    pred = torch.rand(8, C, H, W, generator=gen) * 2 - 1
    soft = torch.rand(8, 1, H, W, generator=gen)
    for hole in (hole_masks(8), (soft > 0.5).float(), soft, torch.zeros(8, 1, H, W), torch.ones(8, 1, H, W)):
        comp = (1 - hole) * images + hole * pred
        assert not inverted_hole_samples(comp, images, hole).any()
    hole = hole_masks(8)
    assert inverted_hole_samples((1 - hole) * images + hole * pred, images, 1 - hole).all()


# --------------------------------------------------------------------------------------------------
# LaMa: the BaseAdversarialLoss protocol, in the trainer's order
# --------------------------------------------------------------------------------------------------


class LaMaHost:
    """LaMa's training module reduced to what touches the adversarial loss (two optimisers, Lightning-style)."""

    def __init__(self, loss: SCATAdversarialLoss, to_discriminator: str = "predicted_image") -> None:
        torch.manual_seed(0)
        self.generator = TinyGenerator(torch.sigmoid)
        self.discriminator = LaMaDiscriminator()
        self.adversarial_loss = loss
        self.image_to_discriminator = to_discriminator
        self.optG = torch.optim.Adam([*self.generator.parameters(), *loss.generator_parameters()], lr=1e-3)
        self.optD = torch.optim.Adam([*self.discriminator.parameters(), *loss.discriminator_parameters()], lr=1e-3)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img, mask = batch["image"], batch["mask"]
        masked_img = img * (1 - mask)
        batch["predicted_image"] = self.generator(masked_img, mask)
        batch["inpainted"] = mask * batch["predicted_image"] + (1 - mask) * img
        return batch

    def _toggle(self, active: torch.optim.Optimizer) -> dict[nn.Parameter, bool]:
        """Lightning's toggle_optimizer: parameters of the other optimiser stop requiring grad."""
        mine = {p for g in active.param_groups for p in g["params"]}
        state = {}
        for opt in (self.optG, self.optD):
            for g in opt.param_groups:
                for p in g["params"]:
                    state[p] = p.requires_grad
                    if p not in mine:
                        p.requires_grad_(False)
        return state

    def generator_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = self._toggle(self.optG)
        batch = self.forward(batch)
        img, predicted_img = batch["image"], batch[self.image_to_discriminator]
        total = (predicted_img - img).abs().mean()
        self.adversarial_loss.pre_generator_step(
            real_batch=img, fake_batch=predicted_img, generator=self.generator, discriminator=self.discriminator
        )
        discr_real_pred, discr_real_features = self.discriminator(img)
        discr_fake_pred, discr_fake_features = self.discriminator(predicted_img)
        adv_gen_loss, adv_metrics = self.adversarial_loss.generator_loss(
            real_batch=img,
            fake_batch=predicted_img,
            discr_real_pred=discr_real_pred,
            discr_fake_pred=discr_fake_pred,
            mask=batch["mask"],
        )
        total = total + adv_gen_loss
        self.optG.zero_grad()
        total.backward()
        self.optG.step()
        for p, flag in state.items():
            p.requires_grad_(flag)
        return total.detach(), adv_metrics

    def discriminator_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        state = self._toggle(self.optD)
        batch = self.forward(batch)
        predicted_img = batch[self.image_to_discriminator].detach()
        self.adversarial_loss.pre_discriminator_step(
            real_batch=batch["image"],
            fake_batch=predicted_img,
            generator=self.generator,
            discriminator=self.discriminator,
        )
        discr_real_pred, discr_real_features = self.discriminator(batch["image"])
        discr_fake_pred, discr_fake_features = self.discriminator(predicted_img)
        adv_discr_loss, adv_metrics = self.adversarial_loss.discriminator_loss(
            real_batch=batch["image"],
            fake_batch=predicted_img,
            discr_real_pred=discr_real_pred,
            discr_fake_pred=discr_fake_pred,
            mask=batch["mask"],
        )
        self.optD.zero_grad()
        adv_discr_loss.backward()
        self.optD.step()
        for p, flag in state.items():
            p.requires_grad_(flag)
        return adv_discr_loss.detach(), adv_metrics


def lama_batch() -> dict[str, torch.Tensor]:
    return {"image": lama_images(), "mask": hole_masks()}


def assert_metrics(metrics: dict[str, torch.Tensor]) -> None:
    for name, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 0, name
        assert not value.requires_grad and torch.isfinite(value), name


@pytest.mark.parametrize("to_discriminator", ["predicted_image", "inpainted"])
def test_lama_protocol_trains_segmenter_and_head_with_the_right_optimisers(to_discriminator: str) -> None:
    loss = SCATAdversarialLoss(
        segmenter=tiny_segmenter(),
        textural_layers=("model0", "model1"),
        semantic_layer="model2",
        feature_dim=4 * WIDTH,
        hidden_features=16,
        out_features=8,
        gp_coef=0.001,
        mask_as_fake_target=True,
        allow_scale_mask=True,
        weight=10.0,
    )
    host = LaMaHost(loss, to_discriminator)
    s_before, head_before = snapshot(loss.discriminator_parameters()), snapshot(loss.generator_parameters())
    g_total, g_metrics = host.generator_step(lama_batch())
    assert set(g_metrics) == {"gen_adv_term", "scat_gen", "contra_text", "contra_sem"}
    assert_metrics(g_metrics)
    assert not changed(s_before, loss.discriminator_parameters()), "the generator step must not move S"
    assert changed(head_before, loss.generator_parameters())
    assert all(p.grad is None or not p.grad.any() for p in host.discriminator.parameters())
    d_total, d_metrics = host.discriminator_step(lama_batch())
    assert set(d_metrics) == {"discr_real_out", "discr_fake_out", "discr_real_gp", "scat_seg"}
    assert_metrics(d_metrics)
    assert d_metrics["discr_real_gp"] > 0
    assert changed(s_before, loss.discriminator_parameters())
    assert torch.isfinite(g_total) and torch.isfinite(d_total)


def test_lama_discriminator_is_taken_from_pre_generator_step_and_left_unregistered() -> None:
    loss = SCATAdversarialLoss(segmenter=tiny_segmenter(), textural_layers=("model0",), semantic_layer=None)
    host = LaMaHost(loss)
    host.generator_step(lama_batch())
    assert loss.criterion().discriminator is host.discriminator
    assert {id(p) for p in loss.parameters()} == {id(p) for p in loss.segmenter.parameters()}


def test_lama_contrastive_terms_need_a_discriminator() -> None:
    loss = SCATAdversarialLoss(segmenter=tiny_segmenter(), textural_layers=("model0",))
    batch = lama_batch()
    pred = torch.zeros(B, 1, 9, 9)
    with pytest.raises(RuntimeError, match="pre_generator_step"):
        loss.generator_loss(batch["image"], batch["image"], pred, pred, batch["mask"])
    with pytest.raises(ValueError, match="feature_dim"):
        SCATAdversarialLoss(segmenter=tiny_segmenter(), semantic_layer="model2")
    auto = SCATAdversarialLoss(
        segmenter=tiny_segmenter(), discriminator=LaMaDiscriminator(), textural_layers="auto", semantic_layer="auto"
    )
    assert auto.textural_layers == ("model0.1", "model1.2") and auto.semantic_layer == "model2.2"
    assert auto.feature_dim == 4 * WIDTH


def test_lama_global_term_matches_non_saturating_and_mask_as_fake_target_is_scat() -> None:
    """Default: LaMa's non-saturating loss; mask_as_fake_target labels known pixels of fakes real (= Eq. 1, bce)."""
    batch = lama_batch()
    img, mask = batch["image"], batch["mask"]
    fake = mask * torch.rand_like(img) + (1 - mask) * img
    gen = torch.Generator().manual_seed(4)
    real_pred, fake_pred = torch.randn(B, 1, 9, 9, generator=gen), torch.randn(B, 1, 9, 9, generator=gen)
    for target in (False, True):
        loss = SCATAdversarialLoss(
            segmenter=tiny_segmenter(), mask_as_fake_target=target, allow_scale_mask=True, gp_coef=0.0
        )
        total, metrics = loss.discriminator_loss(img, fake, real_pred, fake_pred, mask)
        if target:
            want = SF.scat_segmenter_loss(fake_pred, real_pred, mask, kind="bce", resample="nearest")
        else:
            want = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
        torch.testing.assert_close(total - metrics["scat_seg"], want)
    loss = SCATAdversarialLoss(segmenter=tiny_segmenter(), weight=10.0)
    total, metrics = loss.generator_loss(img, fake, real_pred, fake_pred, mask)
    torch.testing.assert_close(metrics["gen_adv_term"], F.softplus(-fake_pred).mean())
    torch.testing.assert_close(total, 10.0 * (metrics["gen_adv_term"] + metrics["scat_gen"]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"negatives": 0}, ValueError, "negatives"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"fill": "white"}, TypeError, "fill"),
        ({"kind": "wgan"}, ValueError, "kind"),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SCATGANLoss(**kwargs)
    with pytest.raises(error, match=match):
        SCATAdversarialLoss(segmenter=tiny_segmenter(), **kwargs)


def test_lama_config_keys_of_the_r1_loss_are_accepted() -> None:
    config = {"weight": 10, "gp_coef": 0.001, "mask_as_fake_target": True, "allow_scale_mask": True}
    loss = SCATAdversarialLoss(**config, segmenter=tiny_segmenter())
    assert loss.weight == 10.0 and loss.gp_coef == 0.001


def test_lama_boundary_checks() -> None:
    loss = SCATAdversarialLoss(segmenter=tiny_segmenter())
    batch = lama_batch()
    img, hole = batch["image"], batch["mask"]
    pred = torch.zeros(B, 1, 9, 9)
    raw = torch.rand_like(img)
    inpainted = hole * raw + (1 - hole) * img
    with pytest.raises(ValueError, match=r"looks like \[-1, 1\]"):
        loss.generator_loss(img * 2 - 1, inpainted * 2 - 1, pred, pred, hole)
    with pytest.raises(ValueError, match="valid mask"):
        loss.generator_loss(img, inpainted, pred, pred, 1 - hole)
    # the raw prediction differs from the image everywhere: the mask check cannot tell, and stays silent
    loss.generator_loss(img, raw, pred, pred, 1 - hole)
    with pytest.raises(TypeError, match=r"\(logits, features\)"):
        loss.generator_loss(img, inpainted, (pred, []), (pred, []), hole)
    lenient = SCATAdversarialLoss(segmenter=tiny_segmenter(), check_range=False, check_mask=False)
    lenient.generator_loss(img * 2 - 1, inpainted * 2 - 1, pred, pred, 1 - hole)
    strict = SCATAdversarialLoss(segmenter=tiny_segmenter(), allow_scale_mask=False, mask_as_fake_target=True)
    with pytest.raises(ValueError, match="allow_scale_mask"):
        strict.discriminator_loss(img, inpainted, pred, pred, hole)
    with pytest.raises(ValueError, match="requires_grad"):
        SCATAdversarialLoss(segmenter=tiny_segmenter(), gp_coef=1.0).discriminator_loss(
            img, inpainted, pred, pred, hole
        )


# ------------------------------------------------------------------------------------------------------------
# Checkpoint migration (a pre-retrofit AOT-GAN run resumed by the host's own load())
# ------------------------------------------------------------------------------------------------------------


def test_scat_discriminator_loads_a_plain_host_state_dict_and_names_what_stays_at_init() -> None:
    torch.manual_seed(1)
    old = AOTDiscriminator()
    saved = old.state_dict()  # what AOT-GAN's save() wrote before the retrofit (netD.module.state_dict())
    torch.manual_seed(2)
    scat_d = SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter(), hidden_features=16, out_features=8)
    seg_before, head_before = snapshot(scat_d.segmenter.parameters()), snapshot(scat_d.projection.parameters())
    with pytest.warns(UserWarning, match=r"segmenter \(\d+ tensors\), projection \(4 tensors\) keep their initial"):
        scat_d.load_state_dict(saved)  # the host's unchanged load() line
    for key, value in saved.items():
        assert torch.equal(scat_d.netD.state_dict()[key], value), key
    assert not changed(seg_before, scat_d.segmenter.parameters())
    assert not changed(head_before, scat_d.projection.parameters())
    # The retrofitted layout round-trips as before.
    full = scat_d.state_dict()
    other = SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter(), hidden_features=16, out_features=8)
    other.load_state_dict(full)
    assert all(torch.equal(a, b) for a, b in zip(full.values(), other.state_dict().values(), strict=True))


def test_scat_discriminator_state_dict_that_fits_neither_layout_is_refused() -> None:
    scat_d = SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter())
    plain = AOTDiscriminator().state_dict()
    with pytest.raises(ValueError, match=r"keys start with 'module\.'"):
        scat_d.load_state_dict({f"module.{k}": v for k, v in plain.items()})
    with pytest.raises(ValueError, match=r"fit neither, e.g. \['weird.weight'\]"):
        scat_d.load_state_dict({"weird.weight": torch.zeros(1)})
    partial = dict(list(plain.items())[:2])
    with pytest.raises(ValueError, match="missing"):
        scat_d.load_state_dict(partial)
    with pytest.warns(UserWarning):
        scat_d.load_state_dict(partial, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        scat_d.load_state_dict([1, 2])  # type: ignore[arg-type]


def test_load_optimizer_state_keeps_the_old_moments_and_starts_the_new_parameters_fresh() -> None:
    from scatloss.adapters import load_optimizer_state

    torch.manual_seed(0)
    netG, old_d = TinyGenerator(), AOTDiscriminator()
    optG_old = torch.optim.Adam(netG.parameters(), lr=1e-3)
    optD_old = torch.optim.Adam(old_d.parameters(), lr=2e-3)
    for opt, params in ((optG_old, netG.parameters()), (optD_old, old_d.parameters())):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    saved = {"optimG": optG_old.state_dict(), "optimD": optD_old.state_dict()}
    # The retrofitted trainer: same G, D wrapped, the head added to optimG as a new group.
    scat_d = SCATDiscriminator(old_d, segmenter=tiny_segmenter(), hidden_features=16, out_features=8)
    optG = torch.optim.Adam(netG.parameters(), lr=1e-3)
    optD = torch.optim.Adam(scat_d.parameters(), lr=2e-3)
    optG.add_param_group({"params": list(scat_d.generator_parameters())})
    with pytest.raises(ValueError):  # what the host's own load() hits (and swallows)
        optD.load_state_dict(saved["optimD"])
    fresh_d = load_optimizer_state(optD, saved["optimD"])
    fresh_g = load_optimizer_state(optG, saved["optimG"])
    assert fresh_d == [len(list(scat_d.segmenter.parameters()))]
    assert fresh_g == [0, 4]
    for p_old, p_new in zip(old_d.parameters(), scat_d.netD.parameters(), strict=True):
        assert p_old is p_new
        torch.testing.assert_close(optD.state[p_new]["exp_avg"], optD_old.state[p_old]["exp_avg"])
    assert all(p not in optD.state for p in scat_d.segmenter.parameters())
    assert all(p not in optG.state for p in scat_d.generator_parameters())
    assert optD.param_groups[0]["lr"] == 2e-3
    with pytest.raises(ValueError, match="at most 1 parameter groups"):
        load_optimizer_state(optD, optG.state_dict())
    with pytest.raises(TypeError, match="'state' and 'param_groups'"):
        load_optimizer_state(optD, {"weights": 1})


# ------------------------------------------------------------------------------------------------------------
# LaMa parity: mask_scale_mode, LaMa's asserted combinations, defaults
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["maxpool", "bilinear", "nearest", "area", "bicubic"])
def test_lama_mask_scale_modes_resample_as_lama_does(mode: str) -> None:
    """LaMa's interpolate_mask: adaptive max pooling for 'maxpool', else F.interpolate with the mode."""
    batch = lama_batch()
    img, mask = batch["image"], batch["mask"]
    fake = mask * torch.rand_like(img) + (1 - mask) * img
    gen = torch.Generator().manual_seed(5)
    real_pred, fake_pred = torch.randn(B, 1, 7, 7, generator=gen), torch.randn(B, 1, 7, 7, generator=gen)
    loss = SCATAdversarialLoss(
        segmenter=tiny_segmenter(), mask_as_fake_target=True, allow_scale_mask=True, mask_scale_mode=mode, gp_coef=0.0
    )
    total, metrics = loss.discriminator_loss(img, fake, real_pred, fake_pred, mask)
    m = F.adaptive_max_pool2d(mask, (7, 7)) if mode == "maxpool" else F.interpolate(mask, size=(7, 7), mode=mode)
    want = (F.softplus(-real_pred) + F.softplus(fake_pred) * m + (1 - m) * F.softplus(-fake_pred)).mean()
    torch.testing.assert_close(total - metrics["scat_seg"], want)


def test_lama_defaults_and_asserted_combinations_follow_non_saturating_with_r1() -> None:
    loss = SCATAdversarialLoss(segmenter=tiny_segmenter())
    assert loss.gp_coef == 5.0 and loss.allow_scale_mask is False and loss.mask_scale_mode == "nearest"
    with pytest.raises(ValueError, match="use_unmasked_for_gen: expected True"):
        SCATAdversarialLoss(segmenter=tiny_segmenter(), use_unmasked_for_gen=False, use_unmasked_for_discr=True)
    with pytest.raises(ValueError, match="use_unmasked_for_discr: expected True"):
        SCATAdversarialLoss(
            segmenter=tiny_segmenter(),
            mask_as_fake_target=True,
            use_unmasked_for_discr=False,
            use_unmasked_for_gen=False,
        )
    with pytest.raises(ValueError, match="mask_scale_mode"):
        SCATAdversarialLoss(segmenter=tiny_segmenter(), mask_scale_mode="linear")
    # The combination LaMa allows: the generator on every pixel, the discriminator on holes only.
    SCATAdversarialLoss(segmenter=tiny_segmenter(), use_unmasked_for_gen=True, use_unmasked_for_discr=False)


def test_lama_configure_optimizers_recipe_keeps_every_loss_kind_working() -> None:
    """The documented recipe reads the extra parameters with getattr, so LaMa's own losses (no such methods) work."""

    class NonSaturatingWithR1:  # LaMa's stock loss: a plain object without parameter methods
        pass

    disc = LaMaDiscriminator()
    for adversarial_loss, extra in ((NonSaturatingWithR1(), 0), (SCATAdversarialLoss(segmenter=tiny_segmenter()), 1)):
        params = [*disc.parameters(), *getattr(adversarial_loss, "discriminator_parameters", tuple)()]
        assert len(params) == len(list(disc.parameters())) + extra * len(list(tiny_segmenter().parameters()))


@pytest.mark.parametrize("name", ["hidden_features", "out_features"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True, "256"])
def test_scat_discriminator_refuses_a_head_size_that_is_not_a_positive_int(name: str, value: object) -> None:
    # Refused at construction, naming the argument (a zero-width head used to fail only at the first step; a
    # float used to be truncated silently).
    with pytest.raises(ValueError, match=f"^{name}: expected a positive int"):
        SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter(), **{name: value})  # type: ignore[arg-type]


def test_lama_replaced_segmenter_is_the_one_trained_with_contrastive_terms() -> None:
    # With contrastive terms the cached criterion is built for the host's D; assigning a new segmenter must
    # rebuild it, so the discriminator step trains the new segmenter (the one in the optimiser), not the old.
    loss = SCATAdversarialLoss(
        segmenter=tiny_segmenter(), textural_layers=("model0",), semantic_layer=None, gp_coef=0.0
    )
    host = LaMaHost(loss)
    host.generator_step(lama_batch())
    old = loss.segmenter
    assert loss.criterion().segmenter is old
    loss.segmenter = tiny_segmenter()
    assert loss.criterion().segmenter is loss.segmenter and loss.criterion().discriminator is host.discriminator
    batch = lama_batch()
    img, mask = batch["image"], batch["mask"]
    pred = torch.zeros(B, 1, 9, 9)
    total, _ = loss.discriminator_loss(img, mask * torch.rand_like(img) + (1 - mask) * img, pred, pred, mask)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.segmenter.parameters() if p.dim() > 1)
    assert all(p.grad is None for p in old.parameters())


def test_aotgan_criterion_follows_a_replaced_segmenter_or_discriminator() -> None:
    s = aot_setup()
    netD, adv_loss = s["netD"], s["adv_loss"]
    first = adv_loss.criterion(netD)
    assert adv_loss.criterion(netD) is first  # cached while nothing changed
    netD.segmenter = tiny_segmenter()
    crit = adv_loss.criterion(netD)
    assert crit.segmenter is netD.segmenter and crit.discriminator is netD.netD
    netD.netD = AOTDiscriminator()
    crit = adv_loss.criterion(netD)
    assert crit.discriminator is netD.netD and crit.segmenter is netD.segmenter


def test_scat_discriminator_takes_a_head_of_size_one() -> None:
    netD = SCATDiscriminator(AOTDiscriminator(), segmenter=tiny_segmenter(), hidden_features=1, out_features=1)
    assert [tuple(m.weight.shape)[0] for m in netD.projection if isinstance(m, nn.Linear)] == [1, 1]
