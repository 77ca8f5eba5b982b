"""Check a retrofitted AOT-GAN checkout: its own ``Trainer`` runs a few steps on the CPU, single process and DDP.

    python benchmarks/hosts/aotgan.py --checkout PATH/TO/AOT-GAN-for-Inpainting [--size 64] [--batch 2]
                                      [--steps 2] [--ranks 2] [--rec-loss 1*L1] [--skip-ddp]

``PATH`` is your copy of researchmm/AOT-GAN-for-Inpainting with the retrofit applied (docs/retrofitting.md).
The script imports ``src/trainer/trainer.py`` from there and runs ``Trainer(args).train()`` itself, unchanged,
with these substitutions so that it runs on a CPU without a data set:

* ``create_loader(args)`` yields scikit-image sample photos (random crops in [-1, 1]) and scatloss masks;
* ``.cuda()`` is a no-op and ``torch.load(map_location="cuda")`` loads to the CPU when CUDA is absent;
  ``DistributedDataParallel(device_ids=[rank])`` drops the device ids; a missing ``torchvision`` (used only
  for logging grids, VGG and the real data set) is replaced by stubs; ``--rec-loss`` defaults to ``1*L1``
  because Style/Perceptual download VGG19 weights.

Checks, each printed as PASS/FAIL:

1. **resume**: a pre-retrofit run (``G0000000.pt``, plain ``D0000000.pt``, ``O0000000.pt`` in ``save_dir``) is
   loaded by the host's own ``load()``: G and D restored (D through ``SCATDiscriminator.load_state_dict``).
2. every step: all terms finite; D's and S's gradients when ``optimD.step()`` runs equal the gradient of
   ``dis_loss`` alone (recomputed with ``torch.autograd.grad`` inside the loss call).
3. after the steps: every parameter group moved (G, the head in ``optimG``; D, S in ``optimD``).
4. DDP, ``--ranks`` processes (gloo): ``train.py``'s ``distributed=True`` path (both networks DDP-wrapped after
   ``load()``); every parameter identical on every rank after the steps.

It prints every term's magnitude per step (unweighted, and as weighted into the generator's total).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _host  # noqa: E402

from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss  # noqa: E402

check = _host.check


def _import_host(checkout: Path) -> Any:
    src = checkout / "src"
    if not (src / "trainer" / "trainer.py").exists():
        raise SystemExit(f"--checkout: expected an AOT-GAN checkout with src/trainer/trainer.py, got {checkout}")
    stubbed = _host.stub_modules(
        {
            "torchvision.utils": {"make_grid": lambda x, *a, **k: x},
            "torchvision.models": {},
            "torchvision.transforms": {},
            "torchvision.transforms.functional": {},
        }
    )
    if stubbed:
        _host.say(f"note: stand-ins for {stubbed} (not importable here; unused by the check)")
    sys.path.insert(0, str(src))
    return importlib.import_module("trainer.trainer")


def make_args(opts: argparse.Namespace, save_dir: str, distributed: bool, rank: int, world: int) -> argparse.Namespace:
    rec = {}
    for part in opts.rec_loss.split("+"):
        weight, name = part.split("*")
        rec[name] = float(weight)
    return argparse.Namespace(
        model="aotgan", block_num=opts.block_num, rates=[1, 2, 4, 8], gan_type="smgan", rec_loss=rec,
        adv_weight=0.01, lrg=1e-4, lrd=1e-4, beta1=0.5, beta2=0.999, iterations=opts.steps,
        batch_size=opts.batch * world,
        world_size=world, distributed=distributed, local_rank=rank, global_rank=rank, tensorboard=False,
        print_every=1, save_every=10**9, save_dir=save_dir, image_size=opts.size,
    )  # fmt: skip


class CPUTimer:
    """``tic`` / ``hold`` / ``release`` as the host's CUDA-event timer, with ``time.perf_counter``."""

    def __init__(self) -> None:
        import time

        self.clock, self.acc, self.t0 = time.perf_counter, 0.0, time.perf_counter()

    def tic(self) -> None:
        self.t0 = self.clock()

    def hold(self) -> None:
        self.acc += self.clock() - self.t0

    def release(self) -> float:
        value, self.acc = self.acc, 0.0
        return value


class Recorder:
    """Wraps the trainer's ``adv_loss``: records the terms and ``dis_loss``'s own gradient on D and S."""

    def __init__(self, loss: SCATGANLoss) -> None:
        self.loss = loss
        self.log: list[dict[str, float]] = []
        self.want: list[torch.Tensor] | None = None
        self.params: list[nn.Parameter] = []

    def __call__(self, netD: Any, fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> Any:
        dis_loss, gen_loss = self.loss(netD, fake, real, masks)
        inner = netD.module if isinstance(netD, nn.parallel.DistributedDataParallel) else netD
        self.params = [p for p in inner.parameters() if p.requires_grad]
        grads = torch.autograd.grad(dis_loss, self.params, retain_graph=True, allow_unused=True)
        self.want = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)]
        terms = {k: float(v) for k, v in self.loss.last_terms.items()}
        terms["dis_loss"], terms["gen_loss"] = float(dis_loss.detach()), float(gen_loss.detach())
        self.log.append(terms)
        return dis_loss, gen_loss


def run(rank: int, world: int, opts: argparse.Namespace, checkout: str) -> None:
    distributed = world > 1
    shims = _host.cuda_shims()
    if rank == 0 and shims:
        _host.say(f"note: CPU shims: {shims}")
    host = _import_host(Path(checkout))
    net = importlib.import_module("model.aotgan")

    if distributed:
        real_ddp = host.DDP
        host.DDP = lambda module, **kw: real_ddp(module)  # gloo on CPU: no device_ids
    batches = [
        (_host.photos(opts.batch, opts.size, low=-1.0, seed=100 * rank + i), _host.masks(opts.batch, opts.size, seed=i))
        for i in range(opts.steps)
    ]

    def loader(args: Any) -> Any:
        for i, (img, hole) in enumerate(batches):
            yield img, hole, [f"img{i}"]

    host.create_loader = loader
    if not torch.cuda.is_available():
        host.timer = CPUTimer  # the host's timer records CUDA events
    with tempfile.TemporaryDirectory() as tmp:
        # A pre-retrofit run: G, plain D and optimiser states, as the unretrofitted trainer's save() wrote them.
        torch.manual_seed(1)
        args = make_args(opts, tmp, distributed, rank, world)
        old_g, old_d = net.InpaintGenerator(args), net.Discriminator()
        old_optg = torch.optim.Adam(old_g.parameters(), lr=1e-4)
        old_optd = torch.optim.Adam(old_d.parameters(), lr=1e-4)
        torch.save(old_g.state_dict(), os.path.join(tmp, "G0000000.pt"))
        torch.save(old_d.state_dict(), os.path.join(tmp, "D0000000.pt"))
        torch.save({"optimG": old_optg.state_dict(), "optimD": old_optd.state_dict()}, os.path.join(tmp, "O0000000.pt"))

        torch.manual_seed(0)
        trainer = host.Trainer(args)
        netD = trainer.netD.module if distributed else trainer.netD
        netG = trainer.netG.module if distributed else trainer.netG
        if not isinstance(trainer.adv_loss, SCATGANLoss) or not isinstance(netD, SCATDiscriminator):
            raise SystemExit("the checkout is not retrofitted: adv_loss / netD are not SCATGANLoss / SCATDiscriminator")
        if rank == 0:
            g_ok = all(torch.equal(v, netG.state_dict()[k]) for k, v in old_g.state_dict().items())
            d_ok = all(torch.equal(v, netD.netD.state_dict()[k]) for k, v in old_d.state_dict().items())
            check(g_ok and d_ok, "resume: the host's load() restored G and the pre-retrofit D")

        recorder = Recorder(trainer.adv_loss)
        trainer.adv_loss = recorder
        step_d = trainer.optimD.step
        grads_ok: list[bool] = []

        def checked_step(*a: Any, **k: Any) -> Any:
            want = recorder.want or []
            if distributed:  # the applied gradient is the all-reduced one: compare with the mean of dis_loss's
                import torch.distributed as dist

                for w in want:
                    dist.all_reduce(w)
                    w /= world
            got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in recorder.params]
            grads_ok.append(all(torch.allclose(g, w, rtol=1e-4, atol=1e-7) for g, w in zip(got, want, strict=True)))
            return step_d(*a, **k)

        trainer.optimD.step = checked_step
        groups = {
            "G": list(netG.parameters()),
            "head (optimG)": list(netD.generator_parameters()),
            "D": list(netD.netD.parameters()),
            "segmenter (optimD)": list(netD.segmenter.parameters()),
        }
        before = {k: [p.detach().clone() for p in v] for k, v in groups.items()}
        trainer.train()
        if rank == 0:
            _host.say("")
            for i, terms in enumerate(recorder.log):
                ok = all(v == v and abs(v) != float("inf") for v in terms.values())
                check(ok, f"step {i + 1}: every term finite")
            check(all(grads_ok) and len(grads_ok) == opts.steps, "D's and S's update = dis_loss's gradient (each step)")
            for name, params in groups.items():
                moved = any(not torch.equal(a, p) for a, p in zip(before[name], params, strict=True))
                check(moved and bool(params), f"parameter group moved: {name}")
            report_terms(recorder, trainer)
        if distributed:
            same = _host.identical_on_all_ranks([*netG.parameters(), *netD.state_dict().values()])
            if rank == 0:
                check(same, f"DDP: every parameter identical on all {world} ranks after {opts.steps} steps")


def report_terms(recorder: Recorder, trainer: Any) -> None:
    loss = recorder.loss
    adv_w = trainer.args.adv_weight
    text_w = loss.lambda_text * loss.contrastive_scale * adv_w
    sem_w = loss.lambda_sem * loss.contrastive_scale * adv_w
    _host.say("\nterm magnitudes (unweighted | as weighted into the generator's total)")
    for i, t in enumerate(recorder.log):
        row = [f"step {i + 1}:"]
        for key, w in (("g_adv", adv_w), ("g_scat", adv_w), ("g_text", text_w), ("g_sem", sem_w)):
            if key in t:
                row.append(f"{key} {t[key]:.4g} | {w * t[key]:.4g}")
        row.append(f"advg {adv_w * t['gen_loss']:.4g}; dis_loss {t['dis_loss']:.4g} (d_adv {t['d_adv']:.4g}, "
                   f"d_scat {t['d_scat']:.4g})")  # fmt: skip
        _host.say("  " + "; ".join(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, help="path to your AOT-GAN-for-Inpainting checkout")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="per process")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--block-num", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rec-loss", default="1*L1")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    checkout = str(Path(opts.checkout).resolve())
    _host.say(f"== single process ({opts.size}x{opts.size}, batch {opts.batch}, {opts.steps} steps)")
    run(0, 1, opts, checkout)
    if not opts.skip_ddp and opts.ranks > 1:
        _host.say(f"\n== DDP, {opts.ranks} processes (gloo)")
        _host.spawn(run, opts.ranks, opts, checkout)
    return _host.summary()


if __name__ == "__main__":
    raise SystemExit(main())
