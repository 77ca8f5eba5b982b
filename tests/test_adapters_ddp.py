"""The host adapters under DistributedDataParallel: 2 CPU processes (gloo) against one process.

Stand-ins written from the real trainers (not copied):

* **AOT-GAN** (``src/trainer/trainer.py``, ``src/train.py``): ``train.py`` sets ``distributed=True`` whenever
  more than one GPU is visible; the trainer builds both optimisers, calls ``load()``, then wraps ``netG`` and
  ``netD`` in ``DistributedDataParallel``; a step is ``dis_loss, gen_loss = adv_loss(netD, comp_img, images,
  masks)``, ``optimG.zero_grad(); optimD.zero_grad(); sum(losses.values()).backward(); dis_loss.backward();
  optimG.step(); optimD.step()``. The retrofit lines are the documented ones, unchanged.
* **LaMa** under Lightning's DDP strategy (``accelerator: ddp``, PL 1.x defaults ``find_unused_parameters=True``):
  the whole training module (generator, discriminator, the loss module with its segmenter) is one DDP-wrapped
  module whose forward is the training step for one optimiser; before each step the parameters of the other
  optimiser are switched off (Lightning's ``toggle_optimizer``) and LaMa's ``_do_step`` toggles G and D.

What is asserted, float64, after each step: every parameter identical on both ranks; for per-sample terms
(global hinge / non-saturating term, SCAT, R1, the semantic term with ``negatives_from="global"``) the
all-reduced gradients equal one process's gradients on the concatenated batch; batch-coupled terms (the
textural ratio of batch means, the semantic term with the default local negatives) differ, as documented.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import spectral_norm

from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.nets import UNetSegmenter

WORLD = 2
BATCH = 4
SIZE = 16
ADV_WEIGHT = 0.01
TIMEOUT = pytest.mark.timeout(240)


# ------------------------------------------------------------------------------------------------------------
# Stand-in networks and data
# ------------------------------------------------------------------------------------------------------------


class AOTDiscriminator(nn.Module):
    """AOT-GAN's SN-PatchGAN layout (``conv`` Sequential, in-place LeakyReLU), narrow."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            spectral_norm(nn.Conv2d(3, c, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, 1, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 1, 4, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LaMaDiscriminator(nn.Module):
    """LaMa's NLayerDiscriminator layout (``model0..`` blocks, returns ``(logits, features)``), without BatchNorm:
    BatchNorm normalises by the local batch, which makes D itself batch-coupled under DDP (a host property)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.Conv2d(3, c, 4, 2, 2), nn.LeakyReLU(0.2, True))
        self.model1 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, 2, 2), nn.LeakyReLU(0.2, True))
        self.model2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 4, 1, 2), nn.LeakyReLU(0.2, True))
        self.model3 = nn.Sequential(nn.Conv2d(4 * c, 1, 4, 1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for i in range(4):
            x = getattr(self, f"model{i}")(x)
            feats.append(x)
        return feats[-1], feats[:-1]


def _batch(low: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen, dtype=torch.float64)
    image = image * 2 - 1 if low < 0 else image
    hole = torch.zeros(BATCH, 1, SIZE, SIZE, dtype=torch.float64)
    for i, (y, x, h, w) in enumerate([(2, 2, 6, 6), (8, 4, 6, 8), (0, 10, 6, 6), (5, 5, 7, 7)]):
        hole[i, :, y : y + h, x : x + w] = 1
    return image, hole


def _aot_nets(config: str) -> tuple[nn.Module, SCATDiscriminator, SCATGANLoss]:
    torch.manual_seed(0)
    netG = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    layers: dict[str, Any] = {
        "scat": {"textural_layers": (), "semantic_layer": None},
        "sem": {"textural_layers": ()},
        "full": {},
    }[config.split("-")[0]]
    netD = SCATDiscriminator(AOTDiscriminator(), UNetSegmenter(3, base_channels=4, depth=2), **layers)
    negatives_from = "global" if config.endswith("-global") else "local"
    loss = SCATGANLoss(host_adv_weight=ADV_WEIGHT, negatives_from=negatives_from, temperature=0.5)
    return netG, netD, loss


def _aot_step(netG: nn.Module, netD: nn.Module, loss: SCATGANLoss, image: torch.Tensor, hole: torch.Tensor) -> None:
    """AOT-GAN's trainer body (order as in the real file), without the optimiser steps."""
    images_masked = image * (1 - hole) + hole
    pred = netG(torch.cat([images_masked, hole], dim=1))
    comp = (1 - hole) * image + hole * pred
    losses = {"L1": (pred - image).abs().mean()}
    dis_loss, gen_loss = loss(netD, comp, image, hole)
    losses["advg"] = gen_loss * ADV_WEIGHT
    sum(losses.values()).backward()  # type: ignore[union-attr]
    dis_loss.backward()


AOT_CONFIGS = ("scat", "sem-global", "sem-local", "full-global")


def _aot_grads(config: str, image: torch.Tensor, hole: torch.Tensor, wrap: bool) -> dict[str, list[torch.Tensor]]:
    netG, netD, loss = _aot_nets(config)
    optG = torch.optim.SGD(netG.parameters(), lr=0.5)
    optD = torch.optim.SGD(netD.parameters(), lr=0.5)
    optG.add_param_group({"params": list(netD.generator_parameters())})  # the retrofit line, unchanged
    inner = netD
    if wrap:  # after load(), as the trainer does
        netG, netD = DDP(netG), DDP(netD)  # type: ignore[assignment]
    out: dict[str, list[torch.Tensor]] = {}
    for step in range(2):
        optG.zero_grad()
        optD.zero_grad()
        _aot_step(netG, netD, loss, image, hole)
        if step == 0:
            out = {
                "G": [p.grad.clone() for p in inner_g(netG).parameters()],  # type: ignore[union-attr]
                "D": [p.grad.clone() for p in inner.netD.parameters()],  # type: ignore[union-attr]
                "S": [p.grad.clone() for p in inner.segmenter.parameters()],  # type: ignore[union-attr]
                "head": [p.grad.clone() for p in inner.generator_parameters()],  # type: ignore[union-attr]
            }
        optG.step()
        optD.step()
    out["params"] = [p.detach().clone() for p in (*inner_g(netG).parameters(), *inner.state_dict().values())]
    return out


def inner_g(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, DDP) else m


# ------------------------------------------------------------------------------------------------------------
# LaMa under Lightning-style DDP
# ------------------------------------------------------------------------------------------------------------


class LaMaModule(nn.Module):
    """A training module as Lightning's DDP strategy wraps it: forward = training step of one optimiser."""

    def __init__(self, config: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.discriminator = LaMaDiscriminator()
        kwargs: dict[str, Any] = {"gp_coef": 0.5, "weight": 10.0, "mask_as_fake_target": True, "allow_scale_mask": True}
        if config.startswith("sem"):
            kwargs.update(semantic_layer="model2", feature_dim=16, temperature=0.5)
            kwargs["negatives_from"] = "global" if config.endswith("global") else "local"
        self.adversarial_loss = SCATAdversarialLoss(
            segmenter=UNetSegmenter(3, base_channels=4, depth=2), discriminator=self.discriminator, **kwargs
        )

    def optimizers_params(self) -> list[list[nn.Parameter]]:
        """``configure_optimizers`` after the retrofit (the getattr form that keeps every loss kind working)."""
        extra_d = getattr(self.adversarial_loss, "discriminator_parameters", tuple)
        extra_g = getattr(self.adversarial_loss, "generator_parameters", tuple)
        return [
            [*self.generator.parameters(), *extra_g()],
            [*self.discriminator.parameters(), *extra_d()],
        ]

    def forward(self, image: torch.Tensor, mask: torch.Tensor, optimizer_idx: int) -> torch.Tensor:
        set_requires_grad(self.generator, optimizer_idx == 0)
        set_requires_grad(self.discriminator, optimizer_idx == 1)
        pred = self.generator(torch.cat([image * (1 - mask), mask], dim=1))
        inpainted = mask * pred + (1 - mask) * image
        loss_fn = self.adversarial_loss
        if optimizer_idx == 0:
            l1 = (inpainted - image).abs().mean()
            loss_fn.pre_generator_step(
                real_batch=image, fake_batch=inpainted, generator=self.generator, discriminator=self.discriminator
            )
            real_pred, _ = self.discriminator(image)
            fake_pred, _ = self.discriminator(inpainted)
            adv, _ = loss_fn.generator_loss(
                real_batch=image, fake_batch=inpainted, discr_real_pred=real_pred, discr_fake_pred=fake_pred, mask=mask
            )
            return l1 + adv
        fake = inpainted.detach()
        image = image.clone()  # pre_discriminator_step sets requires_grad on it (R1)
        loss_fn.pre_discriminator_step(
            real_batch=image, fake_batch=fake, generator=self.generator, discriminator=self.discriminator
        )
        real_pred, _ = self.discriminator(image)
        fake_pred, _ = self.discriminator(fake)
        d_loss, _ = loss_fn.discriminator_loss(
            real_batch=image, fake_batch=fake, discr_real_pred=real_pred, discr_fake_pred=fake_pred, mask=mask
        )
        return d_loss


def set_requires_grad(module: nn.Module, value: bool) -> None:
    for p in module.parameters():
        p.requires_grad = value


LAMA_CONFIGS = ("scat", "sem-global", "sem-local")


def _lama_grads(config: str, image: torch.Tensor, mask: torch.Tensor, wrap: bool) -> dict[str, list[torch.Tensor]]:
    module = LaMaModule(config)
    groups = module.optimizers_params()
    opts = [torch.optim.SGD(g, lr=0.5) for g in groups]
    runner: nn.Module = DDP(module, find_unused_parameters=True) if wrap else module
    out: dict[str, list[torch.Tensor]] = {}
    for step in range(2):
        for idx, opt in enumerate(opts):
            # Lightning's toggle_optimizer: the other optimiser's parameters off for this step.
            for other, g in enumerate(groups):
                for p in g:
                    p.requires_grad = other == idx
            opt.zero_grad()
            runner(image, mask, idx).backward()
            if step == 0:
                out[f"opt{idx}"] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in groups[idx]]
            opt.step()
        for g in groups:
            for p in g:
                p.requires_grad = True
    out["params"] = [p.detach().clone() for p in module.state_dict().values()]
    return out


# ------------------------------------------------------------------------------------------------------------
# Workers
# ------------------------------------------------------------------------------------------------------------


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    torch.set_default_dtype(torch.float64)
    results: dict[str, Any] = {}
    try:
        n = BATCH // world
        part = slice(rank * n, (rank + 1) * n)
        image, hole = _batch(-1.0)
        for config in AOT_CONFIGS:
            results[f"aot/{config}"] = _aot_grads(config, image[part], hole[part], wrap=True)
        image01, _ = _batch(0.0)
        for config in LAMA_CONFIGS:
            results[f"lama/{config}"] = _lama_grads(config, image01[part], hole[part], wrap=True)
        results["errors"] = _errors(rank, image[part], hole[part])
    except Exception:  # report instead of hanging the other rank's collectives
        results["failure"] = traceback.format_exc()
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _errors(rank: int, image: torch.Tensor, hole: torch.Tensor) -> dict[str, str]:
    """Bad input under DDP: each must raise a clear error naming what arrived."""
    messages: dict[str, str] = {}
    netG, netD, loss = _aot_nets("scat")
    wrapped_plain = DDP(AOTDiscriminator())
    try:
        loss(wrapped_plain, image, image, hole)  # type: ignore[arg-type]
    except TypeError as exc:
        messages["plain_in_ddp"] = str(exc)
    _, _, sem_loss = _aot_nets("sem-global")
    scat_d = DDP(SCATDiscriminator(AOTDiscriminator(), UNetSegmenter(3, base_channels=4, depth=2), textural_layers=()))
    # Rank 1 sends one sample fewer: the all_gather of the masks must refuse, naming both shapes.
    b = image.shape[0] - rank
    comp = (1 - hole[:b]) * image[:b] + hole[:b] * 0.5
    try:
        sem_loss(scat_d, comp, image[:b], hole[:b])
    except ValueError as exc:
        messages["mask_shapes"] = str(exc)
    return messages


@pytest.fixture(scope="module")
def ddp_results() -> dict[int, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(WORLD, init, tmp), nprocs=WORLD, join=True)
        results = {r: torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)}
    for r, res in results.items():
        if "failure" in res:
            pytest.fail(f"rank {r} failed:\n{res['failure']}")
    return results


def _close(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-9) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=rtol, atol=1e-12) for x, y in zip(a, b, strict=True))


def _reference(host: str, config: str) -> dict[str, list[torch.Tensor]]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        if host == "aot":
            image, hole = _batch(-1.0)
            return _aot_grads(config, image, hole, wrap=False)
        image, hole = _batch(0.0)
        return _lama_grads(config, image, hole, wrap=False)
    finally:
        torch.set_default_dtype(previous)


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------


@TIMEOUT
@pytest.mark.parametrize("key", [f"aot/{c}" for c in AOT_CONFIGS] + [f"lama/{c}" for c in LAMA_CONFIGS])
def test_every_parameter_is_identical_on_both_ranks_after_each_step(ddp_results: dict, key: str) -> None:
    a, b = ddp_results[0][key], ddp_results[1][key]
    assert a["params"] and all(torch.equal(x, y) for x, y in zip(a["params"], b["params"], strict=True))
    for name in a:  # the all-reduced gradients too
        assert all(torch.equal(x, y) for x, y in zip(a[name], b[name], strict=True)), name


@TIMEOUT
@pytest.mark.parametrize("config", ["scat", "sem-global"])
def test_aotgan_ddp_gradients_equal_one_process_on_the_whole_batch(ddp_results: dict, config: str) -> None:
    ddp = ddp_results[0][f"aot/{config}"]
    ref = _reference("aot", config)
    for net in ("G", "D", "S", "head"):
        assert _close(ddp[net], ref[net]), f"{config}: {net}"
    assert bool(ref["head"]) == config.startswith("sem")
    assert _close(ddp["params"], ref["params"])  # after two full steps


@TIMEOUT
@pytest.mark.parametrize("config", ["sem-local", "full-global"])
def test_aotgan_batch_coupled_terms_differ_from_one_process(ddp_results: dict, config: str) -> None:
    """Local negatives (M = local batch) and the textural ratio of batch means: G's gradient is not the
    whole-batch one; D's and S's (per-sample losses) still are."""
    ddp = ddp_results[0][f"aot/{config}"]
    ref = _reference("aot", config)
    assert _close(ddp["D"], ref["D"]) and _close(ddp["S"], ref["S"])
    assert not _close(ddp["G"], ref["G"])


@TIMEOUT
@pytest.mark.parametrize("config", ["scat", "sem-global"])
def test_lama_lightning_ddp_gradients_equal_one_process_on_the_whole_batch(ddp_results: dict, config: str) -> None:
    ddp = ddp_results[0][f"lama/{config}"]
    ref = _reference("lama", config)
    assert _close(ddp["opt0"], ref["opt0"]), "generator optimiser (G and the head)"
    assert _close(ddp["opt1"], ref["opt1"]), "discriminator optimiser (D and the segmenter, with R1)"
    assert _close(ddp["params"], ref["params"])


@TIMEOUT
def test_lama_local_negatives_differ_from_one_process(ddp_results: dict) -> None:
    ddp = ddp_results[0]["lama/sem-local"]
    ref = _reference("lama", "sem-local")
    # (D's step follows G's update within the step, so D's gradient inherits the difference: not compared.)
    assert not _close(ddp["opt0"], ref["opt0"])


@TIMEOUT
def test_ddp_bad_input_names_what_arrived(ddp_results: dict) -> None:
    for rank in range(WORLD):
        errors = ddp_results[rank]["errors"]
        assert "DistributedDataParallel wrapping a" in errors["plain_in_ddp"]
        assert "AOTDiscriminator" in errors["plain_in_ddp"]
        assert "rank 0: (2, 1, 16, 16)" in errors["mask_shapes"]
        assert "rank 1: (1, 1, 16, 16)" in errors["mask_shapes"]


@TIMEOUT
def test_global_negatives_refuse_ranks_that_disagree_on_the_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in all_gather in one process: rank 1 reports a world size of 3 (e.g. another group)."""
    from scatloss.criterion import SCATCriterion

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 0)

    def all_gather(parts: list[torch.Tensor], tensor: torch.Tensor, group: Any = None) -> None:
        for i, part in enumerate(parts):
            part.copy_(tensor)
            if i == 1:
                part[0] = 3

    monkeypatch.setattr(dist, "all_gather", all_gather)
    crit = SCATCriterion(nn.Conv2d(3, 1, 1), global_output=None, negatives_from="global")
    with pytest.raises(ValueError, match=r"world size of 2, got \[2, 3\]"):
        crit._gather_holes(torch.zeros(2, 1, 4, 4))
