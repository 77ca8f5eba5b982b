"""Check the drop-in for the authors' released trainer against its own code, and measure the generator step.

    python benchmarks/hosts/release.py --checkout PATH/TO/Generative-Image-Inpainting
        [--batch 5] [--threads 2] [--repeats 3] [--exact-only] [--cost-only] [--exact-d-ch 8] [--block-num 8]

``PATH`` is your copy of zzw-zjgsu/Generative-Image-Inpainting (its ``src/model/model.py`` and
``src/loss/loss.py`` are imported from there, unchanged; ``.cuda()`` is a no-op on a CPU).

1. **Exactness** (float64, D in eval mode so that spectral norm does not advance, 256x256 as the release's D
   requires, ``--batch`` images, a narrow ``UnetDiscriminator(D_ch=--exact-d-ch)`` so that float64 stays quick):
   the release's ``dualadv`` + ``Contrastive`` against :mod:`scatloss.adapters.release` with the same head weights;
   every term and the gradients of G and the head, relative difference printed, PASS below 1e-6 (the release's
   own float64 round-off is about 1e-12).
2. **Generator-step cost** (float32, the release's networks at their defaults, D in train mode, ``--threads``
   threads, one process; each variant a forward of G, its losses and the backward, medians of ``--repeats`` after
   one warm-up, variants interleaved; peak tensor memory from the profiler, measured once per variant):
   ``release`` (its loss module), ``drop-in`` (``scatloss.adapters.release``), ``plain adversarial`` (G + L1 +
   the global and SCAT terms through the drop-in, no contrastive terms) and ``plain`` (G + L1 only).
3. ``--train`` (needs the release's imports: tensorboard; torchvision is stubbed if missing): the checkout's own
   ``Trainer(args).train()`` with the one-line retrofit (``from scatloss.adapters import release as
   loss_module`` in ``src/trainer/trainer.py``), ``--steps`` steps at ``--batch`` (under 5 works), single process
   and DDP with ``--ranks`` gloo processes (``DDP(device_ids=...)`` drops the ids, the CUDA-event timer becomes a
   CPU clock, the data loader yields scikit-image photos): every term finite, D's gradient at ``optimD.step()``
   equals the gradient of the D step's losses, G, the head and D move, and under DDP every parameter is identical
   on every rank.

``--levers``: the drop-in's generator step with candidate speed levers (chunk size, ``channels_last``).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _host  # noqa: E402

from scatloss.adapters import release as drop_in  # noqa: E402
from scatloss.utils import peak_memory_bytes  # noqa: E402

SIZE = 256  # the release's UnetDiscriminator only defines this resolution


def _import(checkout: Path) -> tuple[Any, Any]:
    src = checkout / "src"
    if not (src / "loss" / "loss.py").exists():
        raise SystemExit(f"--checkout: expected the release's checkout with src/loss/loss.py, got {checkout}")
    _host.cuda_shims()
    sys.path.insert(0, str(src))
    return importlib.import_module("model.model"), importlib.import_module("loss.loss")


def _args(block_num: int) -> SimpleNamespace:
    return SimpleNamespace(
        image_size=SIZE, use_D_attn=False, no_SN=False, block_num=block_num, rates=[1, 2, 4, 8],
        globalgan_type="hingegan", SCAT_type="hingegan", distributed=False, no_mlp=False,
    )  # fmt: skip


def _data(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    images = _host.photos(batch, SIZE, low=-1.0, seed=0).to(dtype)
    masks = _host.masks(batch, SIZE, seed=1).to(dtype)
    return images, masks


def _quiet(fn: Any, *a: Any, **k: Any) -> Any:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the release's networks print themselves
        return fn(*a, **k)


def exactness(model: Any, loss: Any, opts: argparse.Namespace) -> bool:
    torch.manual_seed(0)
    args = _args(1)
    netG = _quiet(model.InpaintGenerator, args).double()
    netD = _quiet(model.UnetDiscriminator, args, D_ch=opts.exact_d_ch).double().eval()
    images, masks = _data(opts.batch, torch.float64)
    netD.train()
    with torch.no_grad():  # a few power iterations, so that spectral norm's estimates (and the logits) are sane
        for _ in range(10):
            netD(images)
    netD.eval()
    rel_c = loss.Contrastive(args, netD, False, input_dim=16 * opts.exact_d_ch).double()
    rel_adv = loss.dualadv(args)
    ours_c = drop_in.Contrastive(args, netD, False, input_dim=16 * opts.exact_d_ch)
    ours_c.mlp.load_state_dict(rel_c.mlp.state_dict())  # type: ignore[union-attr]
    ours_adv = drop_in.dualadv(args)
    masked = images * (1 - masks) + masks

    def run(adv: Any, con: Any) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        pred = netG(masked, masks)
        comp = (1 - masks) * images + masks * pred
        d_global, d_scat = adv.D(netD, comp, images, 1 - masks)
        g_global, g_scat = adv.G(netD, comp, 1 - masks)
        text, sem = con(masked, comp, images, masks, 5)
        terms = {"d_global": d_global, "d_scat": d_scat, "g_global": g_global, "g_scat": g_scat, "text": text,
                 "sem": sem}  # fmt: skip
        total = 10 * (pred - images).abs().mean() + g_global + g_scat + 10 * text + sem
        params = [*netG.parameters(), *con.mlp.parameters()]
        return terms, list(torch.autograd.grad(total, params))

    got_terms, got_grads = run(ours_adv, ours_c)
    try:
        want_terms, want_grads = run(rel_adv, rel_c)
    except AssertionError:
        finite = all(bool(torch.isfinite(t).all()) for t in [*got_terms.values(), *got_grads])
        _host.say(f"  the release fails at B={opts.batch} (it asserts num_feat_layers <= batch size); the drop-in runs")
        _host.say(("PASS" if finite else "FAIL") + f" drop-in at B={opts.batch}: every term and gradient finite")
        return finite
    worst = 0.0
    for key, want in want_terms.items():
        rel = float((got_terms[key] - want).detach().abs() / want.detach().abs().clamp_min(1e-30))
        worst = max(worst, rel)
        _host.say(
            f"  {key:9s} release {float(want.detach()): .12g}  "
            f"drop-in {float(got_terms[key].detach()): .12g}  rel {rel:.2g}"
        )
    n_g = len(list(netG.parameters()))
    grad_rel = 0.0
    for part in (slice(0, n_g), slice(n_g, None)):  # G, then the head: max |difference| / max |gradient|
        g = torch.cat([t.flatten() for t in got_grads[part]])
        w = torch.cat([t.flatten() for t in want_grads[part]])
        grad_rel = max(grad_rel, float((g - w).abs().max() / w.abs().max().clamp_min(1e-30)))
    _host.say(f"  gradients of G and of the head: max |difference| / max |gradient| = {grad_rel:.2g}")
    ok = worst < 1e-6 and grad_rel < 1e-6
    _host.say(("PASS" if ok else "FAIL") + f" drop-in == release (float64, B={opts.batch}, D_ch={opts.exact_d_ch})")
    return ok


def _float32_setup(model: Any, opts: argparse.Namespace) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The timed runs' common start: threads, seed, the release's networks, a float32 batch and its G input."""
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    args = _args(opts.block_num)
    netG = _quiet(model.InpaintGenerator, args)
    netD = _quiet(model.UnetDiscriminator, args)
    images, masks = _data(opts.batch, torch.float32)
    masked = images * (1 - masks) + masks
    return args, netG, netD, images, masks, masked


def cost(model: Any, loss: Any, opts: argparse.Namespace) -> None:
    args, netG, netD, images, masks, masked = _float32_setup(model, opts)
    rel_c, rel_adv = loss.Contrastive(args, netD, False), loss.dualadv(args)
    ours_c, ours_adv = drop_in.Contrastive(args, netD, False), drop_in.dualadv(args)
    ours_c.mlp = copy.deepcopy(rel_c.mlp)

    def g_step(variant: str) -> None:
        pred = netG(masked, masks)
        comp = (1 - masks) * images + masks * pred
        total = 10 * (pred - images).abs().mean()
        if variant == "release":
            g, s = rel_adv.G(netD, comp, 1 - masks)
            t, m = rel_c(masked, comp, images, masks, 5)
            total = total + g + s + 10 * t + m
        elif variant == "drop-in":
            g, s = ours_adv.G(netD, comp, 1 - masks)
            t, m = ours_c(masked, comp, images, masks, 5)
            total = total + g + s + 10 * t + m
        elif variant == "plain adversarial":
            g, s = ours_adv.G(netD, comp, 1 - masks)
            total = total + g + s
        total.backward()
        for p in (*netG.parameters(), *netD.parameters(), *rel_c.mlp.parameters(), *ours_c.mlp.parameters()):
            p.grad = None

    variants = ["release", "drop-in", "plain adversarial", "plain"]
    times = _host.interleaved_times(g_step, variants, opts.repeats)
    mem = {v: peak_memory_bytes(lambda v=v: g_step(v)) / 2**30 for v in variants}
    med = {v: statistics.median(times[v]) for v in variants}
    _host.say(
        f"\ngenerator step, 256x256, batch {opts.batch}, float32, {opts.threads} threads, median of {opts.repeats}"
    )
    _host.say(f"  {'variant':18s} {'time (s)':>9s} {'peak (GiB)':>11s}  vs plain adversarial   vs plain")
    for v in variants:
        _host.say(
            f"  {v:18s} {med[v]:9.2f} {mem[v]:11.2f}  {med[v] / med['plain adversarial']:5.2f}x / "
            f"{mem[v] / mem['plain adversarial']:4.2f}x      "
            f"{med[v] / med['plain']:5.2f}x / {mem[v] / mem['plain']:4.2f}x"
        )
    _host.say(
        f"  release / drop-in: {med['release'] / med['drop-in']:.2f}x time, "
        f"{mem['release'] / mem['drop-in']:.2f}x memory"
    )
    _host.say("  all times (s): " + "; ".join(f"{v}: {', '.join(f'{t:.2f}' for t in times[v])}" for v in variants))


def levers(model: Any, loss: Any, opts: argparse.Namespace) -> None:
    """The drop-in's generator step with candidate speed levers, each against the default, interleaved."""
    args, netG, netD, images, masks, masked = _float32_setup(model, opts)
    adv = drop_in.dualadv(args)
    configs = {"default (chunk 8)": {}, "chunk 32": {"chunk_size": 32}, "channels_last": {"channels_last": True}}
    losses = {k: drop_in.Contrastive(args, netD, False, chunk_size=c.get("chunk_size", 8)) for k, c in configs.items()}

    def g_step(name: str) -> None:
        cl = configs[name].get("channels_last", False)
        fmt = torch.channels_last if cl else torch.contiguous_format
        netD.to(memory_format=fmt)
        x_img, x_masked = images.to(memory_format=fmt), masked.to(memory_format=fmt)
        pred = netG(masked, masks)
        comp = ((1 - masks) * images + masks * pred).contiguous(memory_format=fmt)
        g, s = adv.G(netD, comp, 1 - masks)
        t, m = losses[name](x_masked, comp, x_img, masks, 5)
        (10 * (pred - images).abs().mean() + g + s + 10 * t + m).backward()
        for p in (*netG.parameters(), *netD.parameters(), *losses[name].parameters()):
            p.grad = None

    times = _host.interleaved_times(g_step, list(configs), opts.repeats)
    base = statistics.median(times["default (chunk 8)"])
    _host.say(f"\nlevers (drop-in generator step, median of {opts.repeats}):")
    for k, v in times.items():
        med = statistics.median(v)
        _host.say(f"  {k:18s} {med:7.2f} s  {med / base:5.2f}x  ({', '.join(f'{t:.2f}' for t in v)})")


class _Loader:
    """What the release's trainer reads from its data loader: ``len()`` and, under DDP, ``sampler.set_epoch``."""

    sampler = SimpleNamespace(set_epoch=lambda epoch: None)

    def __len__(self) -> int:
        return 10**6


def train(rank: int, world: int, opts: argparse.Namespace, checkout: str) -> None:
    """The checkout's own ``Trainer(args).train()``, retrofitted by one line, for ``opts.steps`` steps."""
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        if rank == 0:
            _host.say(("PASS " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    _host.cuda_shims()
    _host.stub_modules(
        {
            "torchvision.utils": {"make_grid": lambda x, *a, **k: x},
            "torchvision.transforms": {},
            "torchvision.transforms.functional": {},
        }
    )
    sys.path.insert(0, str(Path(checkout) / "src"))
    host = importlib.import_module("trainer.trainer")
    if host.loss_module is not drop_in:
        raise SystemExit("the checkout is not retrofitted: trainer.py does not import scatloss.adapters.release")
    if world > 1:
        real_ddp = host.DDP
        host.DDP = lambda module, **kw: real_ddp(module)  # gloo on CPU: no device_ids

    from trainer import common  # the release's CUDA-event timer

    if not torch.cuda.is_available():
        common.timer = host.timer = _CPUTimer
    batches = iter(
        [(_host.photos(opts.batch, SIZE, low=-1.0, seed=10 * rank + i), _host.masks(opts.batch, SIZE, seed=i), ["x"])
         for i in range(opts.steps)]
    )  # fmt: skip
    host.create_loader = lambda args: (_Loader(), batches)
    args = _args(opts.block_num)
    args.__dict__.update(
        rec_loss={"L1": 10.0}, adv_weight=1.0, text_weight=10.0, sem_weight=1.0, lrg=1e-4, lrd=1e-4, beta1=0.0,
        beta2=0.99, iterations=opts.steps, batch_size=opts.batch, world_size=world, distributed=world > 1,
        local_rank=rank, global_rank=rank, model="model", netD="Unet", resume=False, tensorboard=False,
        print_every=1, save_every=10**9, save_dir="/nonexistent",
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = _quiet(host.Trainer, args)
    inner = lambda m: m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m  # noqa: E731
    netG, netD, mlp = inner(trainer.netG), inner(trainer.netD), inner(trainer.contrastive_loss.mlp)
    groups = {"G": list(netG.parameters()), "head (optimG)": list(mlp.parameters()), "D": list(netD.parameters())}
    before = {k: [p.detach().clone() for p in v] for k, v in groups.items()}
    log: list[dict[str, float]] = []
    want: list[torch.Tensor] = []
    d_params = [p for p in netD.parameters() if p.requires_grad]
    d_fn, c_fn = trainer.dualadv_loss.D, trainer.contrastive_loss

    def record_d(*a: Any) -> Any:
        g, s = d_fn(*a)
        want[:] = [x.detach().clone() for x in torch.autograd.grad(g + s, d_params, retain_graph=True)]
        log.append({"d_global": float(g.detach()), "d_scat": float(s.detach())})
        return g, s

    def record_c(*a: Any) -> Any:
        t, m = c_fn(*a)
        log[-1].update(text=float(t.detach()), sem=float(m.detach()))
        return t, m

    trainer.dualadv_loss.D, trainer.contrastive_loss = record_d, record_c
    step_d, grads_ok = trainer.optimD.step, []

    def checked_step(*a: Any, **k: Any) -> Any:
        expected = [w.clone() for w in want]
        if world > 1:
            import torch.distributed as dist

            for w in expected:
                dist.all_reduce(w)
                w /= world
        grads_ok.append(
            all(torch.allclose(p.grad, w, rtol=1e-4, atol=1e-7) for p, w in zip(d_params, expected, strict=True))
        )
        return step_d(*a, **k)

    trainer.optimD.step = checked_step
    _quiet(trainer.train)
    for i, entry in enumerate(log):
        finite = all(v == v and abs(v) != float("inf") for v in entry.values())
        check(finite, f"step {i + 1}: finite: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items()))
    check(len(grads_ok) == opts.steps and all(grads_ok), "D's update = the gradient of the D step's losses")
    for name, params in groups.items():
        moved = any(not torch.equal(a, p) for a, p in zip(before[name], params, strict=True))
        check(moved, f"parameter group moved: {name}")
    if world > 1:
        same = _host.identical_on_all_ranks([p for g in groups.values() for p in g])
        check(same, f"DDP: every parameter identical on all {world} ranks after {opts.steps} steps")
    if failures:
        raise SystemExit(1)


class _CPUTimer:
    def __init__(self) -> None:
        self.acc, self.t0 = 0.0, time.perf_counter()

    def tic(self) -> None:
        self.t0 = time.perf_counter()

    def hold(self) -> None:
        self.acc += time.perf_counter() - self.t0

    def release(self) -> float:
        value, self.acc = self.acc, 0.0
        return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-num", type=int, default=8)
    parser.add_argument("--exact-d-ch", type=int, default=8)
    parser.add_argument("--exact-only", action="store_true")
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument("--levers", action="store_true", help="only: time candidate levers of the drop-in")
    parser.add_argument("--train", action="store_true", help="only: the checkout's retrofitted Trainer, a few steps")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ranks", type=int, default=2)
    opts = parser.parse_args(argv)
    if opts.train:
        checkout = str(Path(opts.checkout).resolve())
        torch.set_num_threads(1)
        _host.say(f"== the checkout's Trainer, single process, batch {opts.batch}, {opts.steps} steps")
        train(0, 1, opts, checkout)
        if opts.ranks > 1:
            _host.say(f"== the checkout's Trainer, DDP, {opts.ranks} processes (gloo)")
            _host.spawn(train, opts.ranks, opts, checkout)
        return 0
    model, loss = _import(Path(opts.checkout).resolve())
    ok = True
    if opts.levers:
        levers(model, loss, opts)
        return 0
    if not opts.cost_only:
        torch.set_num_threads(opts.threads)
        ok = exactness(model, loss, opts)
    if not opts.exact_only:
        cost(model, loss, opts)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
