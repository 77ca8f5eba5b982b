"""The authors' released trainer (zzw-zjgsu/Generative-Image-Inpainting): the release-exact options and preset,
and the drop-in loss module :mod:`scatloss.adapters.release` against a stand-in of the release's computation.

The stand-in (``release_reference``) is written from reading the release's ``src/loss/loss.py`` (not copied):
five discriminator passes with autograd, textural terms ``l1(a, p) / (l1(a, n) + 1e-7)`` over
``residual_features[1:5]``, the MLP head, ``x / (|x| + 1e-7)``, logits without temperature and a cross entropy
with target 0, negatives ``gt_i`` corrupted by every mask ``j`` (holes filled with 1); hinge global and SCAT terms
on valid masks. The stand-in discriminator has the release's layout (``blocks`` of ``ModuleList``s, the pooled
bottleneck fed to ``linear_middle``, a 4-tuple output).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

import scatloss
from scatloss import functional as SF
from scatloss.adapters import release as release_module
from scatloss.losses import InpaintingObjective, SemanticContrastiveLoss
from scatloss.masks import MaskGenerator

SIZE = 32


class ReleaseLikeD(nn.Module):
    """The release's UnetDiscriminator layout, narrow: 5 down blocks (the 5th pooled), a decoder, 4 outputs."""

    def __init__(self, ch: int = 4) -> None:
        super().__init__()
        widths = [ch, 2 * ch, 4 * ch, 4 * ch, 8 * ch]
        blocks, cin = [], 3
        for w in widths:
            blocks.append(nn.ModuleList([nn.Sequential(spectral_norm(nn.Conv2d(cin, w, 3, padding=1)), nn.ReLU(),
                                                       nn.AvgPool2d(2))]))  # fmt: skip
            cin = w
        blocks.append(
            nn.ModuleList([nn.Sequential(nn.Upsample(scale_factor=32), spectral_norm(nn.Conv2d(cin, ch, 1)))])
        )
        self.blocks = nn.ModuleList([*blocks, nn.Conv2d(ch, 1, 1)])
        self.linear_middle = spectral_norm(nn.Linear(8 * ch, 1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        residual, h = [x], x
        pooled = out_global = None
        for index, blocklist in enumerate(self.blocks[:-1]):
            for block in blocklist:
                h = block(h)
            if index < 4:
                residual.append(h)
            if index == 4:
                residual.append(h)
                pooled = torch.sum(F.relu(h), [2, 3])
                out_global = self.linear_middle(pooled)
        out = self.blocks[-1](h)
        return residual, pooled, out_global, out  # type: ignore[return-value]


def release_reference(netD: nn.Module, mlp: nn.Module, comp: torch.Tensor, images: torch.Tensor, masks: torch.Tensor):
    """The release's terms, the release's way (see the module docstring)."""
    valid = 1 - masks
    images_masked = images * (1 - masks) + masks
    _, _, gf, pf = netD(comp.detach())
    _, _, gr, pr = netD(images)
    d_global = F.relu(1 - gr).mean() + F.relu(1 + gf).mean()
    d_scat = F.relu(1 - pr).mean() + (F.relu(1 - pf) * valid).mean() + (F.relu(1 + pf) * (1 - valid)).mean()
    _, _, g_global, g_pixel = netD(comp)
    g_adv, g_scat = -g_global.mean(), (-g_pixel * (1 - valid)).mean()
    fo, fo_final, _, _ = netD(comp)
    fg, fg_final, _, _ = netD(images)
    fc, _, _, _ = netD(images_masked)
    b = images.shape[0]
    gts, ms = images.repeat_interleave(b, 0), masks.repeat(b, 1, 1, 1)
    _, fn_final, _, _ = netD(gts * (1 - ms) + ms)
    text = sum((fo[i] - fg[i]).abs().mean() / ((fo[i] - fc[i]).abs().mean() + 1e-7) for i in range(1, 5))

    def rn(f: torch.Tensor) -> torch.Tensor:
        f = mlp(f)
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-7)

    a, p, n = rn(fo_final), rn(fg_final), rn(fn_final).view(b, b, -1)
    logits = torch.cat([(a * p).sum(1, keepdim=True), torch.bmm(n, a.unsqueeze(2)).squeeze(2)], dim=1)
    sem = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long))
    return {"d_global": d_global, "d_scat": d_scat, "g_adv": g_adv, "g_scat": g_scat, "text": text, "sem": sem}


def release_case(b: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 release-layout D in eval mode (no power iteration), ``b`` images in [-1, 1], hole masks (1 =
    missing), the corrupted input (holes filled with 1) and a composite of a random prediction."""
    torch.manual_seed(0)
    netD = ReleaseLikeD().double().eval()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(b, 3, SIZE, SIZE, generator=gen, dtype=torch.float64) * 2 - 1
    masks = MaskGenerator(SIZE, SIZE, seed=1).sample(b).double()
    pred = torch.rand(images.shape, generator=gen, dtype=torch.float64) * 2 - 1
    comp = masks * pred + (1 - masks) * images
    return netD, images, masks, images * (1 - masks) + masks, comp


def assert_close_f64(got: torch.Tensor, want: torch.Tensor) -> None:
    """float64 agreement with a term written out another way (summation order only)."""
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def _setup(b: int):
    torch.manual_seed(0)
    netD = ReleaseLikeD().double().eval()
    netG = nn.Conv2d(4, 3, 3, padding=1).double()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(b, 3, SIZE, SIZE, generator=gen, dtype=torch.float64) * 2 - 1
    masks = MaskGenerator(SIZE, SIZE, seed=1).sample(b).double()
    return netD, netG, images, masks


@pytest.mark.parametrize("b", [3, 5])
def test_release_drop_in_equals_the_release_computation(b: int) -> None:
    """Every term and the generator's and head's gradients, float64, D in eval mode; B = 3 (the release asserts
    num_feat_layers <= B and fails) and B = 5."""
    netD, netG, images, masks = _setup(b)
    args = SimpleNamespace(globalgan_type="hingegan", SCAT_type="hingegan", distributed=False)
    adv = release_module.dualadv(args)
    contrastive = release_module.Contrastive(args, netD, False, input_dim=32, mlp_dim=16)
    images_masked = images * (1 - masks) + masks

    def step(use_drop_in: bool) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        pred = netG(torch.cat([images_masked, masks], 1))
        comp = (1 - masks) * images + masks * pred
        if use_drop_in:
            d_global, d_scat = adv.D(netD, comp, images, 1 - masks)
            g_adv, g_scat = adv.G(netD, comp, 1 - masks)
            text, sem = contrastive(images_masked, comp, images, masks, 5)
            terms = {"d_global": d_global, "d_scat": d_scat, "g_adv": g_adv, "g_scat": g_scat, "text": text, "sem": sem}
        else:
            terms = release_reference(netD, contrastive.mlp, comp, images, masks)
        g_total = (
            10 * (pred - images).abs().mean() + terms["g_adv"] + terms["g_scat"] + 10 * terms["text"] + terms["sem"]
        )
        params = [*netG.parameters(), *contrastive.mlp.parameters()]
        return terms, list(torch.autograd.grad(g_total, params))

    got_terms, got_grads = step(True)
    want_terms, want_grads = step(False)
    for key, want in want_terms.items():
        torch.testing.assert_close(got_terms[key], want, rtol=1e-9, atol=1e-12, msg=key)
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_release_drop_in_runs_one_autograd_pass_of_the_composite_and_leaves_d_without_gradient() -> None:
    netD, netG, images, masks = _setup(2)
    args = SimpleNamespace(globalgan_type="hingegan", SCAT_type="hingegan")
    adv, contrastive = release_module.dualadv(args), release_module.Contrastive(args, netD, input_dim=32, mlp_dim=16)
    calls = []
    netD.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    pred = netG(torch.cat([images * (1 - masks) + masks, masks], 1))
    comp = (1 - masks) * images + masks * pred
    g_adv, g_scat = adv.G(netD, comp, 1 - masks)
    text, sem = contrastive(images * (1 - masks) + masks, comp, images, masks, 5)
    (g_adv + g_scat + text + sem).backward()
    assert calls.count(True) == 1  # the composite, once; x, x~ and the negatives without autograd
    assert all(p.grad is None for p in netD.parameters())
    assert all(p.grad is not None for p in contrastive.mlp.parameters())


def test_release_loss_names_and_kinds() -> None:
    with pytest.raises(ValueError, match="globalgan_type"):
        release_module.dualadv(SimpleNamespace(globalgan_type="wgan", SCAT_type="hingegan"))
    x, y = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(release_module.L1()(x, y), (x - y).abs().mean())
    with pytest.raises(ValueError, match="UnetDiscriminator"):
        release_module.release_layers(nn.Conv2d(3, 1, 1))


# ------------------------------------------------------------------------------------------------------------
# The release-exact options in the core (normalisation epsilon, head init, unweighted D step) and the preset
# ------------------------------------------------------------------------------------------------------------


def _additive(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (x.pow(2).sum(-1, keepdim=True).sqrt() + eps)


def _backends() -> list[str]:
    try:
        import triton  # noqa: F401
    except ImportError:
        return ["torch"]
    return ["torch", "triton"]


@pytest.mark.parametrize("backend", _backends())
def test_additive_normalisation_matches_the_release_form_on_every_backend(backend: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a, p = torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, 5, generator=gen, dtype=torch.float64)
    n = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    a[0] = 0.0  # a zero vector stays zero
    eps = 1e-3  # large enough that the two forms differ visibly
    want_logits = torch.cat(
        [(_additive(a, eps) * _additive(p, eps)).sum(-1, keepdim=True),
         torch.einsum("bd,bmd->bm", _additive(a, eps), _additive(n, eps))], dim=1
    )  # fmt: skip
    want = (torch.logsumexp(want_logits, 1) - want_logits[:, 0]).mean()
    if backend == "triton":
        a, p, n = a.float(), p.float(), n.float()
    got = SF.semantic_contrastive_loss(a, p, n, temperature=1.0, normalize_eps=eps, backend=backend)  # type: ignore[arg-type]
    tol = 1e-12 if backend == "torch" else 1e-5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    clamp = SF.semantic_contrastive_loss(a, p, n, temperature=1.0, backend=backend)  # type: ignore[arg-type]
    assert not torch.allclose(clamp.double(), want, rtol=1e-6, atol=0)  # the option changes the result
    inputs = tuple(t.detach().double().requires_grad_(True) for t in (a, p, n))

    def loss(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return SF.semantic_contrastive_loss(x, y, z, temperature=1.0, normalize_eps=eps, backend=backend)  # type: ignore[arg-type]

    if backend == "torch":
        assert torch.autograd.gradcheck(loss, inputs)
    with pytest.raises(ValueError, match="normalize_eps"):
        SF.semantic_contrastive_loss(a, p, n, normalize_eps=-1.0)


def test_orthogonal_head_init_is_the_releases() -> None:
    torch.manual_seed(0)
    sem = SemanticContrastiveLoss(in_features=64, hidden_features=16, out_features=16, projection_init="orthogonal")
    first, last = sem.projection[0], sem.projection[2]  # type: ignore[index]
    for layer in (first, last):
        w = layer.weight.detach()
        torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(w.shape[0]), rtol=1e-5, atol=1e-5)  # gain sqrt(2)
        assert not layer.bias.any()
    default = SemanticContrastiveLoss(in_features=64, hidden_features=16, out_features=16)
    assert default.projection[0].bias.abs().sum() > 0  # type: ignore[index]
    with pytest.raises(ValueError, match="projection_init"):
        SemanticContrastiveLoss(in_features=4, projection_init="xavier")  # type: ignore[arg-type]


def test_unweighted_discriminator_step_and_the_release_preset() -> None:
    gen = torch.Generator().manual_seed(1)
    fake, real = torch.randn(2, 1, generator=gen), torch.randn(2, 1, generator=gen)
    pf, pr = torch.randn(2, 1, 8, 8, generator=gen), torch.randn(2, 1, 8, 8, generator=gen)
    hole = MaskGenerator(8, 8, seed=0).sample(2)
    kwargs = {"fake_logits": fake, "real_logits": real, "fake_pixel_logits": pf, "real_pixel_logits": pr}
    weighted = InpaintingObjective(lambda_adv=0.5).discriminator_loss(hole, **kwargs)
    plain = InpaintingObjective(lambda_adv=0.5, weight_discriminator=False).discriminator_loss(hole, **kwargs)
    torch.testing.assert_close(weighted["total"], 0.5 * (weighted["adv"] + weighted["scat"]))
    torch.testing.assert_close(plain["total"], plain["adv"] + plain["scat"])

    preset = InpaintingObjective.release()
    assert preset.semantic.temperature == 1.0 and preset.semantic.normalize_eps == 1e-7
    assert preset.semantic.projection_init == "orthogonal" and preset.semantic.in_features == 1024
    assert preset.weight_discriminator is False and preset.textural.eps == 1e-7 and not preset.textural.per_sample
    assert preset.weights() == {"adv": 1.0, "scat": 1.0, "text": 10.0, "sem": 1.0, "rec": 10.0}
    assert InpaintingObjective.release(temperature=0.07).semantic.temperature == 0.07

    torch.manual_seed(0)
    d = scatloss.nets.UNetDiscriminator(base_channels=4, depth=3, max_channels=16)
    crit = scatloss.SCATCriterion.release(d)
    assert crit.textural_layers == d.textural_layers and crit.semantic_layer == d.semantic_layer
    assert crit.negatives == "batch" and crit.fill == 1.0 and crit.objective.semantic.in_features == 16
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    hole16 = MaskGenerator(16, 16, seed=2).sample(2)
    with torch.no_grad():
        terms = crit.generator_step(image.clone(), image, hole16)
    assert set(terms) == {"adv", "scat", "text", "sem", "rec", "total"}
    assert all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        d_terms = crit.discriminator_step(image, image, hole16)
    assert math.isclose(float(d_terms["total"]), float(d_terms["adv"] + d_terms["scat"]), rel_tol=1e-6)
