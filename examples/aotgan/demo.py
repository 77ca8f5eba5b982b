"""The demo (``make demo``): SCAT's full objective vs the baseline, both continued from one trained generator.

Run from the repository root::

    python -m examples.aotgan.demo                       # about 4-5 min on 2 idle CPU cores, writes runs/demo/
    python -m examples.aotgan.demo --steps 600 --jobs 1  # longer, one arm after the other

Both arms start from the same weights, ``examples/aotgan/warmup/weights.pt``: the small AOT-style generator
trained by this trainer with the baseline objective (``examples/aotgan/baseline/``), unchanged, and its U-Net
discriminator after a further segmenter warm-up against that frozen generator (SCAT's segmenter loss and the
global adversarial loss, ``--lr-g 0``; command and log in ``examples/aotgan/warmup/``), so the segmenter already
finds many of the holes when the generator starts to answer. Same seed, batches and masks; the arms differ only
by the loss:

- ``scat``: ``--objective full`` (global adversarial + SCAT + textural + semantic contrastive + L1, Eq. 8);
- ``baseline``: ``--objective baseline`` (global adversarial + L1; the per-pixel head gets no loss).

Each arm is one run of :mod:`examples.aotgan.train` (``--init-from``), in its own process (``--jobs 2``: side
by side on two cores). Outputs under ``--out`` (default ``runs/demo``):

- ``compare.png``: held-out crops: input, both arms' outputs, ground truth, and the SCAT arm's final segmenter
  map (:func:`segmenter_score`, white = generated);
- ``segmenter.png`` / ``segmenter_train.png``: the segmenter's map on held-out / training crops at the start
  and at every saved step of the SCAT arm: where it finds the holes, and the generator answering;
- ``curves.png``: loss terms and the segmenter's hole-detection AUROC over steps, both arms;
- ``metrics.md`` / ``metrics.json``: held-out L1 / PSNR / SSIM per hole-ratio bucket for the starting weights
  and both arms, the segmentation-confusion monitor, the SCAT arm's final segmenter scored on every generator's
  held-out composites (:func:`scatloss.evaluate.segmentation_confusion`) and, with ``--probe-steps N``, the
  detectability probe (a fresh segmenter trained on each generator's composites,
  :func:`scatloss.evaluate.detectability`; lower = more seamless);
- ``scat/`` and ``baseline/``: each arm's run folder (labelled ``samples/step_*.png``, ``train_log.jsonl``,
  ``metrics.*``, checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # `python examples/aotgan/demo.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from examples.aotgan.demo import main as _main

    raise SystemExit(_main())

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = Path(__file__).resolve().parent / "warmup" / "weights.pt"
ARMS: tuple[tuple[str, str, str], ...] = (
    ("scat", "full", "SCAT (full objective)"),
    ("baseline", "baseline", "baseline (adv + L1)"),
)
"""``(folder, trainer objective, label)`` of the two arms."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.aotgan.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--weights", default=str(WEIGHTS),
        help="starting weights (default: the shipped baseline generator with the warmed-up segmenter)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=240, help="training steps per arm (default 240)")
    p.add_argument("--sample-every", type=int, default=40, help="steps between saved grids/checkpoints (default 40)")
    p.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate (default 2e-4, as pre-trained)")
    p.add_argument("--lr-d", type=float, default=4e-4, help="discriminator/segmenter learning rate (default 4e-4)")
    p.add_argument("--eval-images", type=int, default=32, help="held-out crops scored (default 32)")
    p.add_argument(
        "--probe-steps",
        type=int,
        default=0,
        help="also train a detectability probe per generator for this many steps (default 0: skip; it costs about "
        "as much as the arms' training, and at 64x64 a few hundred steps stay at chance)",
    )
    p.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="arms in parallel (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of batches and masks (default 0)")
    p.add_argument("--reuse", action="store_true", help="keep arms already trained with these settings (redraw only)")
    return p


ARCH_FLAGS: tuple[str, ...] = ("size", "batch_size", "g_channels", "g_blocks", "d_channels", "d_depth", "data")
"""Settings each arm takes from the starting weights' training configuration (network shapes and data)."""

BOOL_FLAGS: tuple[str, ...] = ("colour_augment",)
"""Switches each arm takes from the starting weights' configuration (on there, on in both arms)."""


def weights_settings(weights: str | os.PathLike[str]) -> list[str]:
    """``--size ... --data ... [--colour-augment]`` of the run that trained ``weights`` (so both arms continue
    with its shapes and data)."""
    from examples.aotgan.checkpoint import TrainerError
    from examples.aotgan.monitor import load_weights

    try:
        config = load_weights(weights)["config"]
    except TrainerError as error:
        raise SystemExit(f"demo: {error}") from None
    flags = []
    for key in ARCH_FLAGS:
        if config.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(config[key])]
    flags += [f"--{key.replace('_', '-')}" for key in BOOL_FLAGS if config.get(key) is True]
    return flags


def arm_command(args: argparse.Namespace, folder: str, objective: str) -> list[str]:
    """The trainer command of one arm (recorded in metrics.md)."""
    return [
        sys.executable, "-m", "examples.aotgan.train", "--objective", objective, "--init-from", str(args.weights),
        *args.weights_flags,
        "--steps", str(args.steps), "--lr-g", str(args.lr_g), "--lr-d", str(args.lr_d), "--seed", str(args.seed),
        "--log-every", "5", "--sample-every", str(args.sample_every), "--ckpt-every", str(args.sample_every),
        "--keep-checkpoints", "0", "--eval-images", str(args.eval_images), "--threads", "1", "--no-progress",
        "--overwrite", "--out", str(Path(args.out) / folder),
    ]  # fmt: skip


def _steps_done(run_dir: Path) -> int:
    log = run_dir / "train_log.jsonl"
    if not log.exists():
        return 0
    lines = log.read_text(encoding="utf-8").splitlines()
    try:
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (ValueError, KeyError):
        return 0


def _finished(args: argparse.Namespace, folder: str, objective: str) -> bool:
    """The arm's folder holds a finished run of exactly this arm's command (``--reuse``)."""
    run_dir = ROOT / args.out / folder
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = {"objective": objective, "steps": args.steps, "lr_g": args.lr_g, "lr_d": args.lr_d, "seed": args.seed,
              "init_from": str(args.weights)}  # fmt: skip
    return metrics.get("step") == args.steps and all(config.get(k) == v for k, v in wanted.items())


def train_arms(args: argparse.Namespace) -> dict[str, float]:
    """Run the arms (``--jobs`` at a time) and return each one's wall time in seconds."""
    out = ROOT / args.out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending = [arm for arm in ARMS if not (args.reuse and _finished(args, arm[0], arm[1]))]
    running: dict[str, tuple[subprocess.Popen[bytes], float, Any]] = {}
    times: dict[str, float] = {}
    last_print = 0.0
    while pending or running:
        while pending and len(running) < args.jobs:
            folder, objective, _ = pending.pop(0)
            (out / folder).mkdir(parents=True, exist_ok=True)
            handle = (out / f"{folder}.log").open("wb")
            proc = subprocess.Popen(arm_command(args, folder, objective), cwd=ROOT, env=env, stdout=handle,
                                    stderr=subprocess.STDOUT)  # fmt: skip
            running[folder] = (proc, time.perf_counter(), handle)
        for folder, (proc, started, handle) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            handle.close()
            del running[folder]
            times[folder] = time.perf_counter() - started
            if code != 0:
                tail = (out / f"{folder}.log").read_text(encoding="utf-8", errors="replace")[-2000:]
                raise SystemExit(f"demo: the {folder} arm failed (exit {code}); its output ends with:\n{tail}")
        if time.perf_counter() - last_print > 15:
            last_print = time.perf_counter()
            status = ", ".join(f"{f} {_steps_done(out / f)}/{args.steps}" for f, _, _ in ARMS)
            print(f"  training: {status}", flush=True)
        time.sleep(0.5)
    return times


def _arm_config(args: argparse.Namespace, folder: str) -> Any:
    from examples.aotgan.train import TrainConfig

    saved = json.loads((ROOT / args.out / folder / "config.json").read_text(encoding="utf-8"))
    return TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})


def _networks(cfg: Any, checkpoint: Path | None, weights: Path | None = None) -> tuple[Any, Any, Any]:
    from examples.aotgan.checkpoint import load_checkpoint
    from examples.aotgan.monitor import init_from
    from examples.aotgan.train import build_models

    G, D, loss = build_models(cfg)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        loss.load_state_dict(state["loss"])
    elif weights is not None:
        init_from(G, D, cfg.to_dict(), weights)
    return G.eval(), D.eval(), loss.eval()


def segmenter_score(D: Any, comp: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in ``[0, 1]``: the per-pixel head's "generated" score on its hinge scale, for pictures.

    The head is trained with SCAT's hinge loss (Eq. 1 in hinge form), which pushes the logit ``S`` of real
    pixels to ``>= 1`` and of hole pixels to ``<= -1``; this maps ``-S`` from ``[-1, 1]`` to ``[0, 1]`` (black:
    confidently real, white: confidently generated, grey: inside the margin). ``sigmoid(-S)``, the probability
    the metrics threshold, is the same ranking but squeezes the margin into 0.27-0.73 and reads as flat grey.
    """
    return ((1.0 - D(comp)[1].float()) / 2.0).clamp(0.0, 1.0)


def _train_crops(train: Any, n: int) -> torch.Tensor:
    """``n`` training crops spread over the training set (deterministic: the crops are planned from the seed), in
    their photos' own colours (without ``--colour-augment``'s remapping, which is training-only)."""
    from examples.aotgan.data import ColourAugment

    if isinstance(train, ColourAugment):
        train = train.base
    stride = max(1, len(train) // n)
    return torch.stack([train[i * stride] for i in range(n)])


def _u8(x: torch.Tensor) -> np.ndarray:
    """``(n, C, S, S)`` in ``[-1, 1]`` -> ``(n, S, S, 3)`` uint8."""
    x = x.detach().float().clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).round().astype(np.uint8)


@torch.no_grad()
def render(args: argparse.Namespace) -> dict[str, Path]:
    """``compare.png``, ``segmenter.png`` and ``segmenter_train.png`` from the starting weights and the arms'
    checkpoints."""
    from PIL import Image

    from examples.aotgan.figures import label_grid, tile
    from examples.aotgan.train import FILL, build_datasets
    from scatloss import functional as SF
    from scatloss.masks import BUCKETS, free_form_mask

    out = ROOT / args.out
    cfg = _arm_config(args, "scat")
    train, heldout = build_datasets(cfg)
    n = min(6, len(heldout))
    image = torch.stack([heldout[i] for i in range(n)])
    s = image.shape[-1]
    hole = torch.stack([free_form_mask(s, s, bucket=i % len(BUCKETS), seed=cfg.seed * 1000 + i) for i in range(n)])
    corrupted = SF.corrupt(image, hole, fill=FILL)
    columns = [f"{100 * float(hole[i].mean()):.0f}% holes" for i in range(n)]

    def final(folder: str) -> Path:
        return sorted((out / folder / "checkpoints").glob("step_*.pt"))[-1]

    rows, labels = [_u8(corrupted)], ["input"]
    maps: dict[str, torch.Tensor] = {}
    for folder, _, _ in ARMS:
        G, D, loss = _networks(_arm_config(args, folder), final(folder))
        comp = SF.composite(G(corrupted, hole).float(), image, hole)
        rows.append(_u8(comp))
        labels.append(f"output, {folder}")
        maps[folder] = segmenter_score(D, comp)
    rows.append(_u8(image))
    labels.append("ground truth")
    rows.append(_u8(maps["scat"] * 2 - 1))
    labels.append("segmenter, SCAT")
    compare = label_grid(
        tile(rows), labels, columns,
        title=f"Held-out crops after {args.steps} more steps from the same starting weights (white = generated)",
    )  # fmt: skip
    paths = {"compare": out / "compare.png"}
    Image.fromarray(compare).save(paths["compare"])

    # the segmenter over the run, from the starting weights to every saved step of the SCAT arm, on the held-out
    # crops above and on training crops (the photos the segmenter learns from), with the same masks
    cfg_scat = _arm_config(args, "scat")
    steps: list[tuple[str, Any, Any]] = [("start", *_networks(cfg_scat, None, ROOT / args.weights)[:2])]
    for checkpoint in sorted((out / "scat" / "checkpoints").glob("step_*.pt")):
        steps.append((f"step {int(checkpoint.stem.split('_')[1])}", *_networks(cfg_scat, checkpoint)[:2]))
    crops = {"segmenter": ("held-out crops", image), "segmenter_train": ("training crops", _train_crops(train, n))}
    for name, (what, pictures) in crops.items():
        corrupted = SF.corrupt(pictures, hole, fill=FILL)
        rows, labels = [_u8(pictures), _u8(hole * 2 - 1)], ["ground truth", "holes"]
        for label, G, D in steps:
            rows.append(_u8(segmenter_score(D, SF.composite(G(corrupted, hole).float(), pictures, hole)) * 2 - 1))
            labels.append(label)
        grid = label_grid(
            tile(rows), labels, columns,
            title=f"SCAT arm, {what}: the segmenter's score on each step's fills (white = generated)",
        )  # fmt: skip
        paths[name] = out / f"{name}.png"
        Image.fromarray(grid).save(paths[name])
    return paths


def _bucket_table(reports: dict[str, dict[str, Any]]) -> str:
    names = [b["name"] for b in next(iter(reports.values()))["buckets"]]
    lines = ["| Metric | Arm | " + " | ".join(names) + " |", "|:--|:--|" + "--:|" * len(names)]
    for metric, label, digits in (("l1", "Mean L1 ↓", 4), ("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 3)):
        for arm, report in reports.items():
            cells = [f"{b[metric]:.{digits}f}" if b[metric] is not None else "–" for b in report["buckets"]]
            lines.append(f"| {label} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _confusion_table(reports: dict[str, dict[str, Any]]) -> str:
    names = [b["name"] for b in next(iter(reports.values()))["buckets"]] + ["all"]
    lines = ["| Probe | Arm | " + " | ".join(names) + " |", "|:--|:--|" + "--:|" * len(names)]
    for metric, label in (("auroc", "AUROC ↓"), ("ap", "AP ↓"), ("iou", "IoU ↓")):
        for arm, report in reports.items():
            cells = [b[metric] for b in [*report["buckets"], report["overall"]]]
            lines.append(f"| {label} | {arm} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def summarise(args: argparse.Namespace, times: dict[str, float], started: float) -> dict[str, Any]:
    """Evaluate the starting weights, run the probes, plot the curves, write ``metrics.md`` / ``metrics.json``."""
    from examples.aotgan.figures import plot_curves, read_log
    from examples.aotgan.monitor import p_generated
    from examples.aotgan.train import FILL, build_datasets
    from scatloss.evaluate import detectability, evaluate, segmentation_confusion

    out = ROOT / args.out
    cfg = _arm_config(args, "scat")
    train, heldout = build_datasets(cfg)
    logs = {label: read_log(out / folder / "train_log.jsonl") for folder, _, label in ARMS}
    plot_curves(logs, out / "curves.png", title=f"Both arms from the same starting weights ({args.steps} steps)")

    reports: dict[str, dict[str, Any]] = {}
    G0, _, _ = _networks(_arm_config(args, "baseline"), None, ROOT / args.weights)
    start = evaluate(G0, heldout, seed=cfg.seed, fill=FILL).to_dict()
    reports["start (shipped weights)"] = start
    for folder, _, _ in ARMS:
        reports[folder] = json.loads((out / folder / "metrics.json").read_text(encoding="utf-8"))

    generators = {"start (shipped weights)": G0}
    for folder, _, _ in ARMS:
        cfg_arm = _arm_config(args, folder)
        generators[folder] = _networks(cfg_arm, sorted((out / folder / "checkpoints").glob("step_*.pt"))[-1])[0]
    # the SCAT arm's own segmenter (its final D's per-pixel head), scored on every generator's held-out composites
    _, D_scat, loss_scat = _networks(cfg, sorted((out / "scat" / "checkpoints").glob("step_*.pt"))[-1])
    cross = {
        name: segmentation_confusion(
            lambda x: p_generated(D_scat, loss_scat, x), G, heldout, seed=cfg.seed, fill=FILL,
            output="prob_generated",
        ).to_dict()
        for name, G in generators.items()
    }  # fmt: skip
    probes: dict[str, dict[str, Any]] = {}
    if args.probe_steps:
        probe_train = torch.stack([train[i] for i in range(min(256, len(train)))])
        for name, G in generators.items():
            probes[name] = detectability(
                G, probe_train, heldout, steps=args.probe_steps, seed=cfg.seed, fill=FILL
            ).to_dict()

    monitor = {}
    for folder, _, label in ARMS:
        values = [(r["step"], r["s_auroc"]) for r in logs[label] if r.get("s_auroc") == r.get("s_auroc")]
        if values:
            peak = max(values, key=lambda t: t[1])
            tail = [v for _, v in values[-5:]]
            monitor[folder] = {"first": values[0][1], "peak": peak[1], "peak_step": peak[0],
                               "last5_mean": sum(tail) / len(tail)}  # fmt: skip
    result = {
        "steps": args.steps,
        "weights": args.weights,
        "commands": {folder: " ".join(arm_command(args, folder, obj)[1:]) for folder, obj, _ in ARMS},
        "train_seconds": {k: round(v, 1) for k, v in times.items()},
        "heldout": reports,
        "monitor_auroc": monitor,
        "scat_segmenter": cross,
        "probe": probes,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")

    md = [
        f"# Demo: SCAT vs baseline, {args.steps} steps each from the same weights",
        "",
        f"Both arms start from `{result['weights']}` (see the README next to it), same "
        f"seed, batches and masks. Wall time {result['wall_seconds']:.0f} s (training: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["train_seconds"].items())
        + ").",
        "",
        "## Held-out reconstruction (composite vs ground truth, per hole-ratio bucket)",
        "",
        _bucket_table(reports),
        "",
        "## Segmentation confusion, training monitor",
        "",
        "AUROC of the discriminator's per-pixel head for the holes of each logged training batch (1 = finds "
        "every hole, 0.5 = fooled). The baseline arm's per-pixel head gets no loss in this run: its value shows "
        "the starting head while the generator and the layers it shares with the global head change.",
        "",
        "| Arm | first logged | peak (step) | mean of the last 5 |",
        "|:--|--:|--:|--:|",
        *[f"| {a} | {m['first']:.3f} | {m['peak']:.3f} ({m['peak_step']}) | {m['last5_mean']:.3f} |"
          for a, m in monitor.items()],
        "",
    ]  # fmt: skip
    md += [
        "## Segmentation confusion: the SCAT arm's final segmenter on every generator's fills",
        "",
        "Held-out composites (the same crops and masks for every generator), scored by the per-pixel head of the "
        "SCAT arm's final discriminator: how well the segmenter SCAT trained finds each generator's holes.",
        "",
        _confusion_table(cross).replace("| Probe |", "| Segmenter |"),
        "",
    ]
    if probes:
        md += [
            "## Detectability of the fills (probe)",
            "",
            f"A fresh segmenter trained for {args.probe_steps} steps on each final generator's composites, scored "
            f"on held-out composites (lower = the holes are harder to find = more seamless). "
            "`scatloss.evaluate.detectability`, the same seed for every generator.",
            "",
            _confusion_table(probes),
            "",
        ]
    md += ["## Commands", "", *[f"- {k}: `python {v}`" for k, v in result["commands"].items()], ""]
    (out / "metrics.md").write_text("\n".join(md), encoding="utf-8")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.steps < 1 or args.sample_every < 1:
        raise SystemExit("demo: --steps and --sample-every must be positive")
    if not Path(args.weights).is_file():
        raise SystemExit(f"demo: starting weights {args.weights!r} not found")
    for name in ("weights", "out"):  # the arms run in the repository root: paths relative to it (or absolute)
        path = Path(getattr(args, name)).resolve()
        setattr(args, name, str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    args.weights_flags = weights_settings(ROOT / args.weights)
    torch.set_num_threads(1)  # small convolutions: a second thread gains little and loses much on a busy machine
    started = time.perf_counter()
    print(f"demo: {len(ARMS)} arms x {args.steps} steps from {args.weights}, {args.jobs} at a time -> {args.out}/")
    times = train_arms(args)
    print(f"  trained in {time.perf_counter() - started:.0f} s; scoring, probing and drawing", flush=True)
    result = summarise(args, times, started)
    paths = render(args)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print((ROOT / args.out / "metrics.md").read_text(encoding="utf-8"))
    print(f"demo: {result['wall_seconds']:.0f} s; pictures: " + ", ".join(str(p) for p in paths.values())
          + f", {Path(args.out) / 'curves.png'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
