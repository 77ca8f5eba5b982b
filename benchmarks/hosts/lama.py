"""Check a retrofitted LaMa checkout: its own ``DefaultInpaintingTrainingModule`` trained by pytorch-lightning.

    python benchmarks/hosts/lama.py --checkout PATH/TO/lama [--size 64] [--batch 2] [--steps 2] [--ranks 2]
                                    [--generator ffc_resnet|pix2pixhd_global] [--skip-ddp]

``PATH`` is your copy of advimman/lama with the retrofit of docs/retrofitting.md (the ``scat`` branch in
``make_discrim_loss``, the ``getattr`` lines in ``configure_optimizers``). Needs pytorch-lightning 1.x with the
two-optimiser ``training_step(batch, batch_idx, optimizer_idx)`` (1.9.5 is the newest), omegaconf, pandas and,
for LaMa's FFC generator, kornia. The script builds the training module through the checkout's own
``make_training_model(config)`` from a small config (LaMa's keys: ``losses.adversarial.kind: scat`` with
``weight: 10``, ``gp_coef``, ``mask_as_fake_target``, ``allow_scale_mask`` as in LaMa's configs, plus the
contrastive keys; narrow ``pix2pixhd_nlayer`` D; ``gradient_clip_val: 1`` as LaMa's trainer configs) and fits
it for ``--steps`` steps on the CPU. Substituted, because they need weights or data that are not part of a
checkout: the evaluator (LPIPS/FID), the visualiser, the data loaders (scikit-image photos in [0, 1] and
scatloss masks), and, if they cannot be imported, the perceptual losses and torchvision. On Lightning 1.9,
``Trainer.num_processes`` (read by LaMa's ``get_ddp_rank()``, removed in 1.9) is aliased to ``num_devices``.

Checks, each printed as PASS/FAIL: ``kind: r1`` still builds and its ``configure_optimizers`` runs (the recipe
keeps every loss kind working); every step's terms finite; the discriminator optimiser's gradients (D and S)
when it steps equal the gradient of the loss ``discriminator_loss`` returned (before Lightning's clipping);
every parameter group moves (G, head; D, S); with ``--ranks`` processes (Lightning's DDP strategy, gloo) every
parameter identical on every rank after the steps.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _host  # noqa: E402

check = _host.check


class _Nothing(nn.Module):
    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__()

    def forward(self, *a: Any, **k: Any) -> Any:
        return None

    def process_batch(self, batch: Any) -> dict[str, Any]:
        return {}

    def evaluation_end(self, states: Any = None) -> dict[str, Any]:
        return {}


def _module(name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def _import_host(checkout: Path, batches: list[dict[str, torch.Tensor]]) -> Any:
    if not (checkout / "saicinpainting" / "training" / "trainers" / "default.py").exists():
        raise SystemExit(f"--checkout: expected a LaMa checkout with saicinpainting/training, got {checkout}")
    sys.path.insert(0, str(checkout))
    _host.stub_modules({"torchvision": {}, "torchvision.models": {}})
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    _module("saicinpainting.evaluation", make_evaluator=lambda **k: _Nothing())
    _module("saicinpainting.training.visualizers", make_visualizer=lambda **k: lambda *a, **kw: None)
    _module(
        "saicinpainting.training.data.datasets",
        make_default_train_dataloader=lambda **k: loader,
        make_default_val_dataloader=lambda **k: loader,
        make_constant_area_crop_params=lambda **k: None,
    )
    try:
        importlib.import_module("saicinpainting.training.losses.perceptual")
    except Exception:
        _module(
            "saicinpainting.training.losses.perceptual",
            PerceptualLoss=_Nothing,
            ResNetPL=_Nothing,
            IMAGENET_MEAN=None,
            IMAGENET_STD=None,
        )
        _host.say("note: stand-in for saicinpainting.training.losses.perceptual (weights; the weights are 0 here)")
    return importlib.import_module("saicinpainting.training.trainers")


def make_config(opts: argparse.Namespace, kind: str) -> Any:
    from omegaconf import OmegaConf

    ndf = 8
    generator: dict[str, Any] = {
        "pix2pixhd_global": {"kind": "pix2pixhd_global", "input_nc": 4, "output_nc": 3, "ngf": 8, "n_downsampling": 2,
                             "n_blocks": 1, "conv_kind": "default"},
        "ffc_resnet": {"kind": "ffc_resnet", "input_nc": 4, "output_nc": 3, "ngf": 8, "n_downsampling": 2,
                       "n_blocks": 1, "add_out_act": "sigmoid",
                       "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
                       "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
                       "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False}},
    }[opts.generator]  # fmt: skip
    adversarial: dict[str, Any] = {
        "kind": kind, "weight": 10, "gp_coef": 0.001, "mask_as_fake_target": True, "allow_scale_mask": True,
    }  # fmt: skip
    if kind == "scat":
        adversarial.update(
            textural_layers=["model0", "model1", "model2"], semantic_layer="model3", feature_dim=8 * ndf,
            negatives_from="global" if opts.ranks > 1 else "local",
            segmenter=None,
        )  # fmt: skip
        del adversarial["segmenter"]
    return OmegaConf.create(
        {
            "training_model": {"kind": "default", "visualize_each_iters": 10**9, "concat_mask": True,
                               "store_discr_outputs_for_vis": False},
            "generator": generator,
            "discriminator": {"kind": "pix2pixhd_nlayer", "input_nc": 3, "ndf": ndf, "n_layers": 3},
            "losses": {"l1": {"weight_missing": 0, "weight_known": 10}, "perceptual": {"weight": 0},
                       "adversarial": adversarial, "feature_matching": {"weight": 100}, "resnet_pl": {"weight": 0}},
            "optimizers": {"generator": {"kind": "adam", "lr": 1e-3}, "discriminator": {"kind": "adam", "lr": 1e-4}},
            "visualizer": {"kind": "noop"},
            "evaluator": {"kind": "default"},
            "data": {"train": {}, "val": {}, "visual_test": None},
            "trainer": {"kwargs": {"accelerator": "ddp" if opts.ranks > 1 else None}},
        }
    )  # fmt: skip


def run(rank: int, world: int, opts: argparse.Namespace, checkout: str) -> None:
    import pytorch_lightning as pl

    batches = [
        {"image": _host.photos(opts.batch, opts.size, low=0.0, seed=100 * rank + i),
         "mask": _host.masks(opts.batch, opts.size, seed=10 * rank + i)}
        for i in range(opts.steps)
    ]  # fmt: skip
    trainers = _import_host(Path(checkout), batches)
    if not hasattr(pl.Trainer, "num_processes"):  # read by LaMa's get_ddp_rank(); removed in Lightning 1.9
        pl.Trainer.num_processes = property(lambda self: self.num_devices)  # type: ignore[attr-defined]

    if rank == 0:
        try:
            r1 = trainers.make_training_model(make_config(opts, "r1"))
            r1.configure_optimizers()
            check(True, "kind: r1 still builds and configure_optimizers() runs")
        except Exception as exc:  # noqa: BLE001
            check(False, f"kind: r1 still builds and configure_optimizers() runs ({type(exc).__name__}: {exc})")

    torch.manual_seed(0)
    module = trainers.make_training_model(make_config(opts, "scat"))
    loss = module.adversarial_loss
    if type(loss).__name__ != "SCATAdversarialLoss":
        raise SystemExit(
            "the checkout is not retrofitted: losses.adversarial.kind 'scat' did not build SCATAdversarialLoss"
        )
    log: list[dict[str, float]] = []
    want: dict[str, list[torch.Tensor]] = {}
    d_params = [*module.discriminator.parameters(), *loss.discriminator_parameters()]
    gen_loss, dis_loss = loss.generator_loss, loss.discriminator_loss

    def record_g(*a: Any, **k: Any) -> Any:
        value, metrics = gen_loss(*a, **k)
        log.append({"gen_total": float(value.detach()), **{k: float(v) for k, v in metrics.items()}})
        return value, metrics

    def record_d(*a: Any, **k: Any) -> Any:
        value, metrics = dis_loss(*a, **k)
        grads = torch.autograd.grad(value, d_params, retain_graph=True, allow_unused=True)
        want["D"] = [
            torch.zeros_like(p) if g is None else g.detach().clone() for p, g in zip(d_params, grads, strict=True)
        ]
        log.append({"dis_total": float(value.detach()), **{k: float(v) for k, v in metrics.items()}})
        return value, metrics

    loss.generator_loss, loss.discriminator_loss = record_g, record_d
    grads_ok: list[bool] = []

    class Check(pl.Callback):
        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any, opt_idx: int = 0) -> None:
            if opt_idx != 1:
                return
            expected = want.get("D", [])
            if world > 1:
                import torch.distributed as dist

                for w in expected:
                    dist.all_reduce(w)
                    w /= world
            got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in d_params]
            err = max(float((g - w).abs().max() / (w.abs().max() + 1e-12)) for g, w in zip(got, expected, strict=True))
            grads_ok.append(err < 1e-4)
            if err >= 1e-4:
                _host.say(f"   D step: largest relative gradient difference {err:.3g}")

    groups = {
        "G": list(module.generator.parameters()),
        "head (generator optimiser)": list(loss.generator_parameters()),
        "D": list(module.discriminator.parameters()),
        "segmenter (discriminator optimiser)": list(loss.discriminator_parameters()),
    }
    before = {k: [p.detach().clone() for p in v] for k, v in groups.items()}
    trainer = pl.Trainer(
        accelerator="cpu", devices=world, strategy="ddp" if world > 1 else None,
        max_steps=2 * opts.steps,  # Lightning 1.x counts each optimiser's step
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1, callbacks=[Check()],
    )  # fmt: skip
    trainer.fit(module)
    if rank == 0:
        for entry in log:
            ok = all(v == v and abs(v) != float("inf") for v in entry.values())
            check(ok, "finite: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items()))
        check(len(grads_ok) == opts.steps and all(grads_ok), "D's and S's gradient at the D step = the loss's gradient")
        for name, params in groups.items():
            moved = any(not torch.equal(a, p) for a, p in zip(before[name], params, strict=True))
            check(moved and bool(params), f"parameter group moved: {name}")
    if world > 1:
        same = _host.identical_on_all_ranks([p for g in groups.values() for p in g])
        if rank == 0:
            check(same, f"Lightning DDP: every parameter identical on all {world} ranks after {opts.steps} steps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, help="path to your lama checkout")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="per process")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--generator", default="ffc_resnet", choices=("ffc_resnet", "pix2pixhd_global"))
    parser.add_argument("--skip-ddp", action="store_true")
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkout = str(Path(opts.checkout).resolve())
    ranks = opts.ranks
    opts.ranks = 1
    _host.say(f"== single process ({opts.size}x{opts.size}, batch {opts.batch}, {opts.steps} steps)")
    run(0, 1, opts, checkout)
    if not opts.skip_ddp and ranks > 1:
        opts.ranks = ranks
        _host.say(f"\n== Lightning DDP strategy, {ranks} processes (gloo)")
        _host.spawn(run, ranks, opts, checkout)
    return _host.summary()


if __name__ == "__main__":
    raise SystemExit(main())
