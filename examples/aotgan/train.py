"""A compact AOT-GAN-style inpainting trainer, and the same trainer retrofitted with scatloss.

Run from the repository root::

    python -m examples.aotgan.train --demo                      # ~3-4 min on 2 CPU cores, writes runs/demo/
    python examples/aotgan/train.py --objective aotgan --steps 2000 --out runs/aotgan
    python -m examples.aotgan.train --resume runs/demo --steps 1200   # continue bit-exactly
    torchrun --nproc_per_node=2 -m examples.aotgan.train --out runs/ddp  # gloo on CPU, NCCL on GPU

Objectives (``--objective``), the rows of the paper's ablation (Table 3) plus AOT-GAN's own loss:

==============  ===============================================  ===========================================
objective       discriminator                                    generator loss
==============  ===============================================  ===========================================
``aotgan``      SN-PatchGAN (:class:`PatchDiscriminator`)        smgan + L1 (AOT-GAN's, :mod:`.losses`)
``baseline``    two-headed U-Net, global head only               hinge adversarial + L1
``scat``        two-headed U-Net                                 + SCAT (per-pixel head)
``scat+text``   two-headed U-Net                                 + textural contrastive
``full``        two-headed U-Net                                 + semantic contrastive (the paper's model)
==============  ===============================================  ===========================================

Every objective uses the same generator, data, masks, optimisers and loop; the loss object has two methods,
``discriminator_step`` and ``generator_step``, and the scatloss retrofit is the block marked
``scatloss retrofit`` in :func:`build_models` (see ``examples/aotgan/README.md``).

Outputs (``--out``, default ``runs/demo``): ``samples/step_*.png`` labelled grids (rows: corrupted input, output
composite, ground truth, the discriminator's map of what it believes was generated, white = generated),
``metrics.json`` / ``metrics.md`` (held-out L1, PSNR, SSIM per hole-ratio bucket via :mod:`scatloss.evaluate`),
``train_log.jsonl`` (loss terms per logged step), ``checkpoints/step_*.pt``, ``config.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # `python examples/aotgan/train.py` from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from examples.aotgan.train import main as _main

    raise SystemExit(_main())

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._pytree import tree_map  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from examples.aotgan.checkpoint import (  # noqa: E402
    FORMAT,
    NonFiniteError,
    ResumableSampler,
    TrainerError,
    atomic_write,
    load_checkpoint,
    load_newest,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
    verify_checkpoint,
)
from examples.aotgan.figures import save_run_curves  # noqa: E402
from examples.aotgan.losses import SoftMaskPatchGANLoss, smgan_blur_for_size  # noqa: E402
from examples.aotgan.monitor import confusion_terms, init_from  # noqa: E402
from examples.aotgan.networks import AOTGenerator, PatchDiscriminator  # noqa: E402
from scatloss import InpaintingObjective, SCATCriterion  # noqa: E402
from scatloss import functional as SF  # noqa: E402
from scatloss.masks import BUCKETS, MaskGenerator, free_form_mask  # noqa: E402
from scatloss.nets import UNetDiscriminator  # noqa: E402

__all__ = ["OBJECTIVES", "TrainConfig", "Trainer", "TrainerError", "main", "run"]

OBJECTIVES: dict[str, tuple[str, ...] | None] = {
    "aotgan": None,  # AOT-GAN's smgan + L1 with the PatchGAN discriminator
    "baseline": ("adv", "rec"),
    "scat": ("adv", "scat", "rec"),
    "scat+text": ("adv", "scat", "text", "rec"),
    "full": ("adv", "scat", "text", "sem", "rec"),
}
"""Objective name -> SCATCriterion terms (``None``: AOT-GAN's loss)."""

FILL = 1.0
"""Value written into the holes of G's input (white in [-1, 1]), as in AOT-GAN and the SCAT release."""


def _opt(help: str, **extra: Any) -> dict[str, Any]:
    return {"help": help, **extra}


@dataclass
class TrainConfig:
    """Everything a run depends on. The defaults are the demo's settings (64x64 crops, small nets, batch 8)."""

    out: str = field(default="runs/demo", metadata=_opt("run folder for samples, metrics, logs, checkpoints"))
    objective: str = field(default="full", metadata=_opt("loss configuration", choices=tuple(OBJECTIVES)))
    data: str = field(default="skimage", metadata=_opt("'skimage' (bundled photos) or a folder of images"))
    heldout_data: str | None = field(
        default=None, metadata=_opt("folder of held-out images (default: the held-out split of --data)", type=str)
    )
    masks: str | None = field(
        default=None,
        metadata=_opt(
            "folder of hole-mask images (white = missing, same size as --size); default: free-form", type=str
        ),
    )
    bad_images: str = field(
        default="error",
        metadata=_opt(
            "--data/--heldout-data folders: every image is decoded before the run starts; one that fails stops "
            "the start with its name (error) or is left out with a warning (skip)",
            choices=("error", "skip"),
        ),
    )
    size: int = field(default=64, metadata=_opt("training crop side in pixels"))
    batch_size: int = field(default=8, metadata=_opt("images per step and process"))
    steps: int = field(default=250, metadata=_opt("total optimisation steps"))
    g_channels: int = field(default=16, metadata=_opt("generator width (AOT blocks run at 4x)"))
    g_blocks: int = field(default=2, metadata=_opt("number of AOT blocks"))
    d_channels: int = field(default=16, metadata=_opt("discriminator base width"))
    d_depth: int = field(default=4, metadata=_opt("U-Net discriminator depth (size divisible by 2**depth)"))
    lr_g: float = field(default=1e-4, metadata=_opt("generator (and projection head) learning rate"))
    lr_d: float = field(default=1e-4, metadata=_opt("discriminator learning rate"))
    beta1: float = field(default=0.5, metadata=_opt("Adam beta1 (AOT-GAN: 0.5)"))
    beta2: float = field(default=0.999, metadata=_opt("Adam beta2"))
    lambda_adv: float = field(default=1.0, metadata=_opt("weight of adversarial (+ SCAT) terms"))
    lambda_text: float = field(default=10.0, metadata=_opt("weight of the textural contrastive term"))
    lambda_sem: float = field(default=1.0, metadata=_opt("weight of the semantic contrastive term"))
    lambda_rec: float = field(default=10.0, metadata=_opt("weight of the L1 term"))
    temperature: float = field(default=0.07, metadata=_opt("InfoNCE temperature (the release applies none: 1.0)"))
    smgan_kernel: int | None = field(
        default=None, metadata=_opt("smgan blur kernel (default: AOT-GAN's 71 at 512 px, scaled)", type=int)
    )
    smgan_sigma: float | None = field(
        default=None, metadata=_opt("smgan blur sigma (default: AOT-GAN's 10 at 512 px, scaled)", type=float)
    )
    smgan_weighting: str = field(
        default="hole", metadata=_opt("smgan generator weighting", choices=("hole", "release"))
    )
    precision: str = field(default="fp32", metadata=_opt("bf16 autocasts G and D forwards", choices=("fp32", "bf16")))
    device: str = field(default="auto", metadata=_opt("auto | cpu | cuda"))
    seed: int = field(default=0, metadata=_opt("seed of weights, data order, crops and masks"))
    train_length: int = field(default=1024, metadata=_opt("crops per epoch of the bundled photos"))
    colour_augment: bool = field(
        default=False,
        metadata=_opt("permute the RGB channels of training crops and negate half of them (data.ColourAugment)"),
    )
    num_workers: int = field(default=0, metadata=_opt("DataLoader worker processes"))
    threads: int = field(default=0, metadata=_opt("intra-op CPU threads (0: PyTorch's default)"))
    log_every: int = field(default=10, metadata=_opt("steps between train_log.jsonl lines"))
    sample_every: int = field(default=50, metadata=_opt("steps between sample grids (0: only at the end)"))
    ckpt_every: int = field(default=50, metadata=_opt("steps between checkpoints (0: only at the end)"))
    keep_checkpoints: int = field(default=2, metadata=_opt("step checkpoints kept (oldest deleted)"))
    nonfinite: str = field(
        default="stop",
        metadata=_opt(
            "a NaN/inf loss term or gradient: stop before the update, naming the step and the term (stop), or "
            "skip that optimiser's update as AMP's grad scaler does (skip)",
            choices=("stop", "skip"),
        ),
    )
    max_skips: int = field(default=20, metadata=_opt("--nonfinite skip: consecutive skipped steps that stop the run"))
    eval_images: int = field(default=32, metadata=_opt("held-out crops scored (bundled photos)"))
    eval_masks: int = field(default=1, metadata=_opt("masks per held-out image and bucket"))
    grid_images: int = field(default=6, metadata=_opt("columns of the sample grid"))
    resume: str | None = field(default=None, metadata=_opt("checkpoint file or run folder to continue", type=str))
    init_from: str | None = field(
        default=None,
        metadata=_opt("weights file or checkpoint whose G and D start a new run (any objective, step 0)", type=str),
    )
    monitor: bool = field(default=True, metadata=_opt("log the per-pixel head's hole-detection AUROC/AP/IoU"))
    overwrite: bool = field(default=False, metadata=_opt("start over in a run folder that already holds a run"))
    tensorboard: bool = field(default=False, metadata=_opt("also log to TensorBoard (if installed)"))
    progress: bool = field(default=True, metadata=_opt("show a tqdm progress bar"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`TrainerError` for values no run can use."""
        if self.objective not in OBJECTIVES:
            raise TrainerError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("size", "batch_size", "g_channels", "g_blocks", "d_channels", "d_depth", "train_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainerError(f"--{name.replace('_', '-')}: expected a positive int, got {value!r}")
        for name in (
            "steps",
            "log_every",
            "sample_every",
            "ckpt_every",
            "num_workers",
            "seed",
            "keep_checkpoints",
            "threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TrainerError(f"--{name.replace('_', '-')}: expected a non-negative int, got {value!r}")
        multiple = 8 if self.objective == "aotgan" else math.lcm(4, 2**self.d_depth)
        if self.size % multiple:
            what = "8 (PatchGAN)" if self.objective == "aotgan" else f"{multiple} (4 for G, 2**d_depth for D)"
            raise TrainerError(f"--size: expected a multiple of {what}, got {self.size}")
        if self.size < 16:
            raise TrainerError(f"--size: expected at least 16 pixels (SSIM needs 11), got {self.size}")
        if self.precision not in ("fp32", "bf16"):
            raise TrainerError(f"--precision: expected fp32 or bf16, got {self.precision!r}")
        if self.smgan_weighting not in ("hole", "release"):
            raise TrainerError(f"--smgan-weighting: expected hole or release, got {self.smgan_weighting!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainerError(f"--device: expected auto, cpu or cuda, got {self.device!r}")
        if self.nonfinite not in ("stop", "skip"):
            raise TrainerError(f"--nonfinite: expected stop or skip, got {self.nonfinite!r}")
        if isinstance(self.max_skips, bool) or not isinstance(self.max_skips, int) or self.max_skips < 1:
            raise TrainerError(f"--max-skips: expected a positive int, got {self.max_skips!r}")
        if self.bad_images not in ("error", "skip"):
            raise TrainerError(f"--bad-images: expected error or skip, got {self.bad_images!r}")


DEMO_ARGS: tuple[str, ...] = ("--overwrite", "--threads 1")
"""What ``--demo`` adds to the defaults: start over in ``runs/demo``, and one thread (small convolutions gain
little from a second thread, and on a busy 2-core machine lose up to 10x to thread wake-ups)."""

RESUME_KEYS: tuple[str, ...] = (
    "objective", "data", "masks", "size", "batch_size", "g_channels", "g_blocks", "d_channels", "d_depth",
    "lr_g", "lr_d", "beta1", "beta2", "lambda_adv", "lambda_text", "lambda_sem", "lambda_rec", "temperature",
    "smgan_kernel", "smgan_sigma", "smgan_weighting", "precision", "seed", "train_length", "colour_augment",
)  # fmt: skip
"""Settings a resumed run must share with its checkpoint (the rest, e.g. ``steps`` or ``out``, may change)."""


# ----------------------------------------------------------------------------------------------------------------------
# Networks and losses: the AOT-GAN trainer and its scatloss retrofit
# ----------------------------------------------------------------------------------------------------------------------


def build_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(G, D, loss)``; ``loss.discriminator_step`` / ``loss.generator_step`` drive the loop for every objective."""
    netG = AOTGenerator(base_channels=cfg.g_channels, num_blocks=cfg.g_blocks)
    if cfg.objective == "aotgan":
        netD = PatchDiscriminator(base_channels=cfg.d_channels)
        kernel, sigma = smgan_blur_for_size(cfg.size)
        loss: nn.Module = SoftMaskPatchGANLoss(
            netD, kernel_size=cfg.smgan_kernel or kernel, sigma=cfg.smgan_sigma or sigma,
            lambda_adv=cfg.lambda_adv, lambda_rec=cfg.lambda_rec, weighting=cfg.smgan_weighting,  # type: ignore[arg-type]
        )  # fmt: skip
    else:
        # ---- scatloss retrofit --------------------------------------------------------------------------------------
        netD = UNetDiscriminator(base_channels=cfg.d_channels, depth=cfg.d_depth)  # global + per-pixel head
        terms = OBJECTIVES[cfg.objective]
        loss = SCATCriterion(
            netD, textural_layers=netD.textural_layers, semantic_layer=netD.semantic_layer, negatives="batch",
            terms=terms, objective=InpaintingObjective(
                in_features=netD.feature_dim if "sem" in terms else None,  # the released projection head
                lambda_adv=cfg.lambda_adv, lambda_text=cfg.lambda_text, lambda_sem=cfg.lambda_sem,
                lambda_rec=cfg.lambda_rec, temperature=cfg.temperature,
            ),
        )  # fmt: skip
        # ---- end of retrofit: the loop below is unchanged, loss.parameters() joins G's optimiser --------------------
    return netG, netD, loss


# ----------------------------------------------------------------------------------------------------------------------
# Distributed, precision, masks, data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), or use one already initialised."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerError(f"--device {device}: CUDA is not available here")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    else:
        rank, world = 0, 1
    if use_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local_rank % max(1, torch.cuda.device_count())}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return DistInfo(rank, world, local_rank, dev)


def average_gradients(params: Iterable[nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over all processes with one coalesced ``all_reduce`` (what DDP does, without overlap).

    Used for D and the projection head: SCATCriterion freezes D's parameters during the generator step and
    runs its feature passes with early exit, which DDP's reducer cannot follow (see the criterion's docs).
    Every process has the same set of parameters with a gradient (the graph does not depend on the data).
    """
    if info.world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(info.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _upcast(value: Any) -> Any:
    return tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, value)


def enable_bf16(module: nn.Module, device_type: str, float_layers: Sequence[str] = ()) -> None:
    """Run ``module``'s forward under ``torch.autocast(bfloat16)`` and hand back float32 outputs.

    ``float_layers`` (``named_modules`` names; ``":input"`` for a layer's input) are the layers that
    :class:`~scatloss.taps.FeatureTap` reads: their outputs are upcast too, so every loss is computed in
    float32 (the next convolution casts them back to bf16 exactly; element-wise operations in between then
    run in float32). The forward is replaced on the instance, so layer names, ``state_dict`` keys and
    ``isinstance`` stay as they were.
    """
    forward = module.forward

    def autocast_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _upcast(out)

    module.forward = autocast_forward  # type: ignore[method-assign]
    for name in float_layers:
        base, _, suffix = name.partition(":")
        sub = module.get_submodule(base)
        if suffix == "input":
            sub.register_forward_pre_hook(lambda m, args: (_upcast(args[0]), *args[1:]))
        else:
            sub.register_forward_hook(lambda m, args, out: _upcast(out))


class MaskFolder:
    """Hole masks from a folder of images (grey level > 127 = missing), drawn with a private seeded generator.

    Every mask must have the training size exactly (no silent resizing). ``sample`` / ``state_dict`` /
    ``load_state_dict`` behave like :class:`scatloss.masks.MaskGenerator`.
    """

    def __init__(self, root: str, size: int, seed: int) -> None:
        from PIL import Image

        from examples.aotgan.data import IMAGE_EXTENSIONS

        folder = Path(root)
        if not folder.is_dir():
            raise TrainerError(f"--masks: mask folder {root!r} does not exist")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise TrainerError(f"--masks: no mask images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}")
        masks = []
        for path in files:
            try:
                with Image.open(path) as image:
                    array = np.asarray(image.convert("L"))
            except Exception as error:
                raise TrainerError(
                    f"--masks: cannot read mask {str(path)!r}: {type(error).__name__}: {error}"
                ) from None
            if array.shape != (size, size):
                raise TrainerError(
                    f"--masks: mask {str(path)!r} is {array.shape[1]}x{array.shape[0]} but the images are "
                    f"{size}x{size} (--size); resize the masks to the training size"
                )
            masks.append(torch.from_numpy(array > 127).float()[None])
        self.masks = torch.stack(masks)  # (N, 1, S, S)
        self.height = self.width = size
        self._generator = torch.Generator().manual_seed(seed)

    def sample(self, batch: int) -> torch.Tensor:
        index = torch.randint(len(self.masks), (batch,), generator=self._generator)
        return self.masks[index].clone()

    def state_dict(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "rng_state": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("height"), state.get("width")) != (self.height, self.width) or "rng_state" not in state:
            raise ValueError(f"mask state for {state.get('height')}x{state.get('width')}, expected {self.height}")
        self._generator.set_state(state["rng_state"])


class _Repeated(Dataset[torch.Tensor]):
    """A small dataset repeated up to ``length`` items (so one global batch always fits in an epoch)."""

    def __init__(self, base: Any, length: int) -> None:
        self.base, self.length = base, length

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[index % len(self.base)]


def build_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """``(train, heldout)``; a missing folder, a folder without images, etc. raise :class:`TrainerError`."""
    from examples.aotgan.data import ColourAugment, ImageFolder, make_dataset

    # folders: decode every image now, so a file that passes verify() but cannot be decoded stops the start
    # (or is left out) before anything is written, instead of failing in the middle of training
    checked: dict[str, Any] = {"check": "decode", "on_error": "raise" if cfg.bad_images == "error" else "skip"}
    try:
        if cfg.data == "skimage":
            train = make_dataset("skimage", "train", cfg.size, seed=cfg.seed, length=cfg.train_length)
            heldout: Any = make_dataset("skimage", "heldout", cfg.size, seed=cfg.seed, length=cfg.eval_images)
        else:
            train = make_dataset(cfg.data, None if cfg.heldout_data else "train", cfg.size, seed=cfg.seed, **checked)
            heldout = None
            if not cfg.heldout_data:
                heldout = make_dataset(cfg.data, "heldout", cfg.size, seed=cfg.seed, **checked)
        if cfg.heldout_data:
            heldout = ImageFolder(cfg.heldout_data, size=cfg.size, split=None, augment=False, **checked)
    except (OSError, ValueError) as error:  # FileNotFoundError, NotADirectoryError, "no image files", ...
        raise TrainerError(f"data: {error}") from None
    if cfg.colour_augment:
        train = ColourAugment(train, seed=cfg.seed)
    return train, heldout


def _sum_all(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of every element of ``tensors`` as a float32 scalar tensor (no host sync).

    Finite exactly when every element is (NaN and inf propagate through a sum; a sum of finite values only
    overflows near 3e38, where a 2-norm's squares overflow from 1.8e19). Measured on CPU for G's 40 tensors:
    0.3 ms, against 3.5 ms for ``get_total_norm(norm_type=inf)`` and 0.4 ms for the 2-norm.
    """
    return torch.stack([t.detach().sum(dtype=torch.float32) for t in tensors]).sum()


def _mask_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank, 0x6D61736B]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------------


class Trainer:
    """Builds everything from a :class:`TrainConfig` and trains; ``data=False`` skips data and masks (tests)."""

    def __init__(self, cfg: TrainConfig, *, data: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = setup_distributed(cfg.device)
        self.device = self.dist.device
        rank, world = self.dist.rank, self.dist.world_size
        if data:  # data and mask problems are the commonest: report them before building anything else
            self.train_set, self.heldout_set = build_datasets(cfg)
            per_epoch = max(len(self.train_set), cfg.batch_size * world)
            if per_epoch != len(self.train_set):
                self.train_set = _Repeated(self.train_set, per_epoch)
            self.masks: Any = (
                MaskFolder(cfg.masks, cfg.size, _mask_seed(cfg.seed, rank))
                if cfg.masks
                else MaskGenerator(cfg.size, cfg.size, seed=_mask_seed(cfg.seed, rank))
            )
            self.sampler = ResumableSampler(self.train_set, num_replicas=world, rank=rank, seed=cfg.seed)
            self.loader = DataLoader(
                self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed),
                pin_memory=self.device.type == "cuda",
            )  # fmt: skip

        torch.manual_seed(cfg.seed)  # identical initial weights in every process
        self.G, self.D, self.loss = build_models(cfg)
        for module in (self.G, self.D, self.loss):
            module.to(self.device)
        if cfg.precision == "bf16":
            taps = [*getattr(self.loss, "textural_layers", ()), getattr(self.loss, "semantic_layer", None)]
            enable_bf16(self.G, self.device.type)
            enable_bf16(self.D, self.device.type, [t for t in taps if t])
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam([*self.G.parameters(), *self.loss.parameters()], lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.G_train: nn.Module = self.G
        if world > 1:
            for tensor in [*self.D.state_dict().values(), *self.loss.state_dict().values()]:
                dist.broadcast(tensor, 0)
            self.G_train = nn.parallel.DistributedDataParallel(
                self.G, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        torch.manual_seed(cfg.seed + 7919 * (rank + 1))  # per-process stream for anything random below
        np.random.seed(_mask_seed(cfg.seed, rank) % 2**32)
        random.seed(_mask_seed(cfg.seed, rank))
        self.step = self.epoch = self.batch_in_epoch = 0
        self.run_dir = Path(cfg.out)
        self.last_checkpoint: Path | None = None  # the newest checkpoint written or resumed from (all finite)
        self.skips_total = self.skips_consecutive = 0  # --nonfinite skip: steps with a skipped update
        self._skipped_now: list[str] = []
        self._bar: Any = None  # fit's progress bar

    # ---- one step --------------------------------------------------------------------------------------------------

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        return f"last good checkpoint: {self.last_checkpoint}"

    def _guard(self, net: str, terms: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> bool:
        """True when ``terms``, the gradients and the weights of ``optimizer``'s parameters are all finite.

        One host sync: the terms and the sums of the gradients and of the weights are stacked and tested (under
        torch.distributed they are summed over processes first, so every process decides alike). Otherwise,
        by ``--nonfinite``: ``stop`` raises :class:`NonFiniteError` before the optimiser step; ``skip`` drops
        the gradients, leaves the weights and Adam's state as they are and returns False. Non-finite weights
        (an earlier update diverged) cannot be skipped and always stop.
        """
        names = sorted(terms)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        values = [terms[k].detach().float().reshape(()) for k in names]
        labels = [f"{net.lower()}_{k}" for k in names]
        if grads:
            values.append(_sum_all(grads))
            labels.append(f"the sum of {net}'s gradients")
        values.append(_sum_all(params))
        labels.append(f"the sum of {net}'s weights")
        stacked = torch.stack(values)
        if self.dist.world_size > 1:
            dist.all_reduce(stacked)  # a NaN/inf in any process reaches every process
        finite = torch.isfinite(stacked)
        if bool(finite.all()):  # the host sync
            return True
        bad = [f"{a} = {v:g}" for a, v, ok in zip(labels, stacked.tolist(), finite.tolist(), strict=True) if not ok]
        what, step = ", ".join(bad), self.step + 1
        if not finite[-1]:
            raise NonFiniteError(
                f"step {step}: the weights of {net} are non-finite ({what}): an earlier update diverged; "
                f"{self._last_good()}"
            )
        if self.cfg.nonfinite == "stop":
            raise NonFiniteError(
                f"step {step}: non-finite {what}; stopped before {net}'s update (--nonfinite stop); {self._last_good()}"
            )
        optimizer.zero_grad(set_to_none=True)
        self._skipped_now.append(f"{net} ({what})")
        return False

    def _count_skips(self) -> None:
        """``--nonfinite skip``: count steps with a skipped update; ``--max-skips`` in a row stop the run."""
        if not self._skipped_now:
            self.skips_consecutive = 0
            return
        self.skips_consecutive += 1
        self.skips_total += 1
        what, step = "; ".join(self._skipped_now), self.step + 1
        if self.skips_consecutive >= self.cfg.max_skips:
            raise NonFiniteError(
                f"step {step}: non-finite values in {self.skips_consecutive} consecutive steps (--max-skips "
                f"{self.cfg.max_skips}), the last: {what}; {self._last_good()}"
            )
        if self.dist.main:
            print(
                f"step {step}: skipped the update of {what} (--nonfinite skip; {self.skips_consecutive} in a row, "
                f"{self.skips_total} in all)",
                file=sys.stderr,
            )

    def _check_finite_state(self) -> None:
        """Raise :class:`NonFiniteError` if a weight, buffer or optimiser state holds a NaN or an infinity."""
        named: list[tuple[str, Any]] = []
        for prefix, module in (("generator", self.G), ("discriminator", self.D), ("loss", self.loss)):
            named += [(f"{prefix}.{k}", v) for k, v in module.state_dict().items()]
        for prefix, optimizer in (("optim_g", self.opt_g), ("optim_d", self.opt_d)):
            for index, state in optimizer.state_dict()["state"].items():
                named += [(f"{prefix}.state[{index}].{k}", v) for k, v in state.items()]
        floats = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
        flags = torch.stack([torch.isfinite(t).all() for _, t in floats])
        if bool(flags.all()):
            return
        bad = [n for (n, _), ok in zip(floats, flags.tolist(), strict=True) if not ok]
        raise NonFiniteError(
            f"step {self.step}: non-finite {bad[0]}"
            + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
            + f"; the checkpoint was not written; {self._last_good()}"
        )

    def train_step(self, image: torch.Tensor, hole: torch.Tensor, *, update: bool = True) -> dict[str, torch.Tensor]:
        """One D step and one G step on ``image`` ``(B, C, H, W)`` with ``hole`` ``(B, 1, H, W)``.

        With ``update=False`` the gradients are computed (and averaged across processes) but no optimiser
        steps, so ``p.grad`` holds D's gradient of its loss and G's (and the head's) gradient of theirs, both
        at the current weights.
        """
        image, hole = image.to(self.device, non_blocking=True), hole.to(self.device, non_blocking=True)
        self._skipped_now = []
        prediction = self.G_train(SF.corrupt(image, hole, fill=FILL), hole)  # raw x^, float32

        d_terms = self.loss.discriminator_step(prediction, image, hole)  # D (and its per-pixel head)
        self.opt_d.zero_grad(set_to_none=True)
        d_terms["total"].backward()
        average_gradients(self.D.parameters(), self.dist)
        if update and self._guard("D", d_terms, self.opt_d):  # NaN/inf: stop, or skip this update
            self.opt_d.step()

        g_terms = self.loss.generator_step(prediction, image, hole)  # G (+ projection head), D frozen
        self.opt_g.zero_grad(set_to_none=True)
        g_terms["total"].backward()  # G's gradients are averaged by DDP
        average_gradients(self.loss.parameters(), self.dist)
        if update and self._guard("G", g_terms, self.opt_g):
            self.opt_g.step()
        if update:
            self._count_skips()
        return {
            **{f"d_{k}": v.detach() for k, v in d_terms.items()},
            **{f"g_{k}": v.detach() for k, v in g_terms.items()},
        }

    # ---- state -----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything to continue bit-exactly; collective under torch.distributed (RNG states of every rank)."""
        local = {**rng_state(), "masks": self.masks.state_dict()}
        ranks = [local]
        if self.dist.world_size > 1:
            ranks = [None] * self.dist.world_size  # type: ignore[list-item]
            dist.all_gather_object(ranks, local)
        return {
            "format": FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "loss": self.loss.state_dict(),
            "optim_g": self.opt_g.state_dict(),
            "optim_d": self.opt_d.state_dict(),
            "rng": ranks,
            "torch_version": str(torch.__version__),
            "nonfinite_skips": {"total": self.skips_total, "consecutive": self.skips_consecutive},
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore :meth:`state_dict`; a checkpoint of another configuration raises :class:`TrainerError`."""
        saved = state["config"]
        mine = self.cfg.to_dict()
        # a setting added after the checkpoint was written (e.g. colour_augment) counts as its default
        default = {f.name: f.default for f in fields(TrainConfig)}
        diff = [
            f"{k}: checkpoint {saved.get(k, default[k])!r}, this run {mine[k]!r}"
            for k in RESUME_KEYS
            if saved.get(k, default[k]) != mine[k]
        ]
        if diff:
            raise TrainerError(
                f"{source} was trained with another configuration; resuming needs the same " + "; ".join(diff)
            )
        try:
            self.G.load_state_dict(state["generator"])
            self.D.load_state_dict(state["discriminator"])
            self.loss.load_state_dict(state["loss"])
            self.opt_g.load_state_dict(state["optim_g"])
            self.opt_d.load_state_dict(state["optim_d"])
            step, epoch, batch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise TrainerError(f"{source} does not fit this model: {str(error).splitlines()[0][:400]}") from None
        ranks, world = state["rng"], self.dist.world_size
        if not isinstance(ranks, list) or not ranks:
            raise TrainerError(f"{source} is damaged: 'rng' is not a list of per-process states")
        saved_world = int(state["world_size"])
        if saved_world != world:
            warnings.warn(
                f"{source} was written by {saved_world} process(es), this run has {world}: the resume continues the "
                "same data order but is not bit-exact (per-process mask and RNG streams differ)",
                stacklevel=2,
            )
            batch = batch * saved_world // world
        if self.dist.rank < len(ranks):
            local = ranks[self.dist.rank]
            set_rng_state(local)
            try:
                self.masks.load_state_dict(local["masks"])
            except (KeyError, TypeError, ValueError) as error:
                raise TrainerError(f"{source}: mask generator state does not fit: {error}") from None
        self.step, self.epoch, self.batch_in_epoch = step, epoch, batch
        skips = state.get("nonfinite_skips") or {}
        self.skips_total, self.skips_consecutive = int(skips.get("total", 0)), int(skips.get("consecutive", 0))

    # ---- outputs ---------------------------------------------------------------------------------------------------

    def _grid_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out crops and fixed hole masks of every sample grid (one per column)."""
        n = min(self.cfg.grid_images, len(self.heldout_set))
        image = torch.stack([self.heldout_set[i] for i in range(n)]).to(self.device)
        s = image.shape[-1]
        hole = torch.stack(
            [free_form_mask(s, s, bucket=i % len(BUCKETS), seed=self.cfg.seed * 1000 + i) for i in range(n)]
        ).to(self.device)
        return image, hole

    def grid_captions(self) -> tuple[list[str], list[str], str]:
        """``(row captions, column captions, title)`` that :meth:`save_grid` draws around :meth:`sample_grid`."""
        from examples.aotgan.figures import GRID_ROWS

        rows = list(GRID_ROWS)
        if isinstance(self.loss, SoftMaskPatchGANLoss):
            rows[-1] = "D's hole map"  # smgan's PatchGAN map regresses the blurred hole mask
        _, hole = self._grid_batch()
        columns = [f"{100 * float(h.float().mean()):.0f}% holes" for h in hole]
        title = f"step {self.step}, objective {self.cfg.objective} (held-out crops; white = hole / generated)"
        return rows, columns, title

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """``(4 * (S + 2), n * (S + 2), 3)`` uint8: corrupted, composite, ground truth, D's "generated" map."""
        image, hole = self._grid_batch()
        n, s = image.shape[0], image.shape[-1]
        modes = [(m, m.training) for m in (*self.G.modules(), *self.D.modules())]
        self.G.eval()
        self.D.eval()  # eval mode: spectral norm does not advance its power iteration, so training is unaffected
        try:
            corrupted = SF.corrupt(image, hole, fill=FILL)
            comp = SF.composite(self.G(corrupted, hole).float(), image, hole)
            if isinstance(self.loss, SoftMaskPatchGANLoss):
                believed = self.loss.patch_map(comp).clamp(0.0, 1.0)  # smgan regresses the blurred hole mask
            else:
                believed = 1.0 - torch.sigmoid(self.D(comp)[1].float())  # per-pixel head: P(generated)
        finally:
            for m, training in modes:
                m.training = training
        rows = [corrupted, comp, image, believed.expand(-1, 3, -1, -1) * 2.0 - 1.0]
        grid = torch.ones(len(rows), n, 3, s + 2, s + 2)
        for r, row in enumerate(rows):
            grid[r, :, :, 1:-1, 1:-1] = row.float().cpu().clamp(-1, 1)
        grid = grid.permute(0, 3, 1, 4, 2).reshape(len(rows) * (s + 2), n * (s + 2), 3)
        return ((grid + 1.0) * 127.5).round().to(torch.uint8).numpy()

    def save_grid(self) -> Path:
        from PIL import Image

        from examples.aotgan.figures import label_grid

        rows, columns, title = self.grid_captions()
        array = label_grid(self.sample_grid(), rows, columns, title=title)
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"))

    def evaluate(self) -> dict[str, Any]:
        """Held-out L1 / PSNR / SSIM per hole-ratio bucket; writes ``metrics.json`` and ``metrics.md``."""
        from scatloss.evaluate import evaluate

        report = evaluate(
            self.G, self.heldout_set, masks_per_image=self.cfg.eval_masks, seed=self.cfg.seed,
            batch_size=max(8, self.cfg.batch_size), device=self.device, fill=FILL,
        )  # fmt: skip
        result = {"objective": self.cfg.objective, "step": self.step, "size": self.cfg.size, **report.to_dict()}
        text = json.dumps(result, indent=2, allow_nan=False) + "\n"
        atomic_write(self.run_dir / "metrics.json", lambda h: h.write(text), binary=False)
        md = f"# {self.cfg.objective}, step {self.step}\n\n" + report.to_markdown()
        atomic_write(self.run_dir / "metrics.md", lambda h: h.write(md), binary=False)
        return result

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_*.pt`` (rank 0), then delete all but the newest ``keep_checkpoints``.

        Never writes non-finite weights or optimiser state (:class:`NonFiniteError` instead), and deletes older
        checkpoints only after the new file has been read back and its hash verified.
        """
        self._check_finite_state()  # identical weights in every process: every process decides alike
        state = self.state_dict()  # collective
        folder = self.run_dir / "checkpoints"
        path = folder / f"step_{self.step:07d}.pt"
        if not self.dist.main:
            self.last_checkpoint = path
            return None
        save_checkpoint(state, path)
        verify_checkpoint(path)  # read back: a bad write must not rotate the previous good checkpoint away
        self.last_checkpoint = path
        old = sorted(folder.glob("step_*.pt"))[: -self.cfg.keep_checkpoints or None]
        for stale in old if self.cfg.keep_checkpoints else []:
            stale.unlink(missing_ok=True)
        return path

    # ---- the loop --------------------------------------------------------------------------------------------------

    def _reduce_terms(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(terms)
        values = torch.stack([terms[k].float() for k in names])
        if self.dist.world_size > 1:
            dist.all_reduce(values)
            values /= self.dist.world_size
        return dict(zip(names, values.tolist(), strict=True))

    def fit(self, log: _Log | None = None) -> None:
        cfg, main = self.cfg, self.dist.main
        bar = self._bar = _progress(cfg.steps, self.step, enabled=main and cfg.progress)
        last_ckpt = last_grid = -1
        start = time.perf_counter()
        while self.step < cfg.steps:
            self.sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            self.sampler.set_start(self.batch_in_epoch * cfg.batch_size)
            for image in self.loader:
                hole = self.masks.sample(cfg.batch_size)
                terms = self.train_step(image, hole)
                self.step += 1
                self.batch_in_epoch += 1
                if cfg.log_every and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    values = self._reduce_terms(terms)
                    if main and cfg.monitor:  # segmentation confusion of D's per-pixel head (monitor.py)
                        batch = image.to(self.device), hole.to(self.device)
                        values.update(confusion_terms(self.G, self.D, self.loss, *batch))
                    if main and log is not None:
                        log.write(self.step, self.epoch, time.perf_counter() - start, values)
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k.endswith("total")})
                if bar is not None:
                    bar.update(1)
                if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.save_grid()
                    last_grid = self.step
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
                    last_ckpt = self.step
                if self.step >= cfg.steps:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        if bar is not None:
            bar.close()
        if last_ckpt != self.step:
            self.save_checkpoint()
        if main and last_grid != self.step:
            self.save_grid()


class _Log:
    """``train_log.jsonl`` (one JSON object per logged step) and, optionally, TensorBoard scalars."""

    def __init__(self, path: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = path
        kept = []
        if resume_step is not None and path.exists():  # drop lines the resumed run will write again
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
        text = "".join(line + "\n" for line in kept)
        atomic_write(path, lambda h: h.write(text), binary=False)
        self.handle = path.open("a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(
                    "--tensorboard: TensorBoard is not installed (pip install tensorboard); continuing without it, "
                    f"the loss terms are in {path}",
                    file=sys.stderr,
                )
            else:
                self.writer = SummaryWriter(str(path.parent / "tensorboard"), purge_step=resume_step)

    def write(self, step: int, epoch: int, seconds: float, values: dict[str, float]) -> None:
        record = {"step": step, "epoch": epoch, "time_s": round(seconds, 3), **values}
        self.handle.write(json.dumps(record, allow_nan=True) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name.replace("_", "/", 1), value, step)

    def close(self) -> None:
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint file, or the newest ``checkpoints/step_*.pt`` of a run folder (not verified)."""
    p = Path(path)
    if p.is_dir():
        found = sorted((p / "checkpoints").glob("step_*.pt")) or sorted(p.glob("step_*.pt"))
        if not found:
            raise TrainerError(f"--resume: no checkpoints/step_*.pt under the folder {path!r}")
        return found[-1]
    if not p.exists():
        raise TrainerError(f"--resume: checkpoint {path!r} does not exist")
    return p


def load_resume(path: str) -> tuple[Path, dict[str, Any], list[Path]]:
    """``(file, state, skipped)`` to resume from: a checkpoint file as given, or the newest checkpoint of a run
    folder that loads; corrupt newer ones are skipped with a warning (``skipped``, see :func:`load_newest`)."""
    p = Path(path)
    if p.is_dir():
        found = sorted((p / "checkpoints").glob("step_*.pt")) or sorted(p.glob("step_*.pt"))
        if not found:
            raise TrainerError(f"--resume: no checkpoints/step_*.pt under the folder {path!r}")
        return load_newest(found)
    if not p.exists():
        raise TrainerError(f"--resume: checkpoint {path!r} does not exist")
    return p, load_checkpoint(p), []


def _run_dir_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _existing_run(run_dir: Path) -> list[Path]:
    names = ["train_log.jsonl", "metrics.json", "checkpoints", "samples"]
    return [run_dir / n for n in names if (run_dir / n).exists()]


def _occupied(cfg: TrainConfig, existing: list[Path]) -> str:
    names = ", ".join(p.name for p in existing)
    if sorted(Path(cfg.out).glob("checkpoints/step_*.pt")):
        return (
            f"--out {cfg.out!r} already holds a run ({names}); pass --resume {cfg.out} to continue it or --overwrite "
            "to start over"
        )
    return (
        f"--out {cfg.out!r} holds the files of a run that wrote no checkpoint ({names}), so there is nothing to "
        "resume; pass --overwrite to start over"
    )


def _agree(info: DistInfo, failure: TrainerError | None) -> None:
    """Raise ``failure``, or another process's, in every process (a collective under torch.distributed).

    Also the barrier that keeps rank 0 from writing into the run folder before every process has checked it.
    """
    if info.world_size > 1:
        failures: list[str | None] = [None] * info.world_size
        dist.all_gather_object(failures, None if failure is None else str(failure))
        if failure is None:
            for rank, message in enumerate(failures):
                if message is not None:
                    raise TrainerError(f"rank {rank}: {message}")
    if failure is not None:
        raise failure


def _clean_interrupted_writes(run_dir: Path, corrupt: list[Path]) -> None:
    """Rank 0, at start-up: delete temporary files of writes killed before their rename; move corrupt
    checkpoints that a resume skipped aside (``*.pt.corrupt``), so neither rotation nor the next resume meets them."""
    removed = remove_stale_temp_files(run_dir / "checkpoints", "step_*.pt")
    removed += remove_stale_temp_files(run_dir / "samples", "step_*.png")
    for name in ("config.json", "train_log.jsonl", "metrics.json", "metrics.md"):
        removed += remove_stale_temp_files(run_dir, name)
    if removed:
        print(f"removed {len(removed)} temporary file(s) left by an interrupted write in {run_dir}", file=sys.stderr)
    for path in corrupt:
        if path.parent.resolve() == (run_dir / "checkpoints").resolve() and path.exists():
            path.replace(path.with_name(path.name + ".corrupt"))
            print(f"moved the corrupt checkpoint {str(path)!r} aside to {path.name}.corrupt", file=sys.stderr)


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train as ``cfg`` says and return the held-out metrics (``{}`` on other ranks than 0).

    Every check (configuration, data, masks, checkpoint, run folder) happens before the first file is written:
    a :class:`TrainerError` leaves the run folder exactly as it was.
    """
    trainer = Trainer(cfg)  # validates the configuration, and decodes every image of a --data folder
    main = trainer.dist.main
    resume_step = None
    corrupt: list[Path] = []
    failure: TrainerError | None = None
    try:  # every process checks, then all agree (_agree) before rank 0 writes anything
        existing = _existing_run(trainer.run_dir)
        if cfg.resume:
            path, state, corrupt = load_resume(cfg.resume)
            trainer.load_state_dict(state, source=f"checkpoint {str(path)!r}")
            trainer.last_checkpoint = path
            resume_step = trainer.step
            if existing and _run_dir_of(path).resolve() != trainer.run_dir.resolve():
                raise TrainerError(
                    f"--out {cfg.out!r} already holds another run ({', '.join(p.name for p in existing)}); resume "
                    f"into the checkpoint's own folder {str(_run_dir_of(path))!r} or into a new one"
                )
        elif existing and not cfg.overwrite:
            raise TrainerError(_occupied(cfg, existing))
        if cfg.init_from and not cfg.resume:  # weights only: a new run (any objective) from trained networks
            init_from(trainer.G, trainer.D, cfg.to_dict(), cfg.init_from)
    except TrainerError as error:
        failure = error
    _agree(trainer.dist, failure)
    # ---- from here on, files are written ----
    if main:
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        _clean_interrupted_writes(trainer.run_dir, corrupt)
        if not cfg.resume and cfg.overwrite:
            run_dir = trainer.run_dir
            for stale in [
                *run_dir.glob("checkpoints/step_*.pt"),
                *run_dir.glob("samples/*.png"),
                *run_dir.glob("metrics.*"),
            ]:
                stale.unlink()
        text = json.dumps(cfg.to_dict(), indent=2) + "\n"
        atomic_write(trainer.run_dir / "config.json", lambda h: h.write(text), binary=False)
    log = _Log(trainer.run_dir / "train_log.jsonl", resume_step, cfg.tensorboard) if main else None
    try:
        trainer.fit(log)
    finally:
        if trainer._bar is not None:  # a NonFiniteError leaves fit with its bar open: end its line, so that
            trainer._bar.close()  # the error is a line of its own
        if log is not None:
            log.close()
    if main:  # loss terms and the monitor's AUROC over steps (needs matplotlib; skipped without it)
        save_run_curves(trainer.run_dir, cfg.objective)
    result = trainer.evaluate() if main else {}
    if trainer.dist.world_size > 1:
        dist.barrier()
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.aotgan.train",
        description="AOT-GAN-style inpainting trainer with the scatloss retrofit (see examples/aotgan/README.md).",
        argument_default=argparse.SUPPRESS,  # only options given on the command line appear in the namespace
    )
    parser.add_argument(
        "--demo", action="store_true", help=f"the demo: the defaults plus {' '.join(DEMO_ARGS)} (unless given)"
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_text = f"{meta.pop('help')} (default: {f.default})"
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = meta.pop("type", type(f.default))
            parser.add_argument(flag, type=kind, help=help_text, **meta)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The configuration: defaults, then (with ``--resume``) the checkpoint's settings, then the options given."""
    given = vars(_parser().parse_args(argv))
    demo = given.pop("demo", False)
    values = TrainConfig().to_dict()
    if demo:
        values.update(overwrite=True, threads=1)
    if given.get("resume"):
        with warnings.catch_warnings():  # run() loads the checkpoint again and warns (fallback, no hash) once
            warnings.simplefilter("ignore")
            path, state, _ = load_resume(given["resume"])
        saved = state["config"]
        values.update({k: saved[k] for k in RESUME_KEYS if k in saved})
        if "out" not in given:
            values["out"] = str(_run_dir_of(path))
        values["overwrite"] = False
    values.update(given)
    return TrainConfig(**values)


def _leave_process_group(timeout_s: float = 60.0) -> None:
    """Destroy the process group once every process is ready to (gloo: a monitored barrier first, bounded by
    ``timeout_s``). Without it a process that finished its last collective first could tear its gloo connections
    down while a peer was still using them, and abort at exit ("terminate called without an active exception":
    2 of 14 runs of tests/test_distributed.py beside another test file). A peer that crashed or left early only
    costs the timeout; the error is not raised (the run's own outcome is what the caller reports)."""
    if dist.get_backend() == "gloo":
        with contextlib.suppress(RuntimeError):
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
    dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status with a one-line message on stderr and no traceback:
    2 for a :class:`TrainerError` (bad input, refused before anything is written), 3 for a
    :class:`NonFiniteError` (training diverged; the message names the step, the term and the last good checkpoint).
    """
    try:
        cfg = config_from_args(argv)
        started = time.perf_counter()
        result = run(cfg)
    except TrainerError as error:
        rank = f"[rank {dist.get_rank()}] " if dist.is_initialized() else ""
        print(f"{rank}error: {error}", file=sys.stderr)
        return 3 if isinstance(error, NonFiniteError) else 2
    finally:
        if dist.is_initialized():
            _leave_process_group()
    if result:
        from scatloss.evaluate import EvaluationReport

        report = EvaluationReport.from_dict({k: v for k, v in result.items() if k not in ("objective", "step", "size")})
        print(f"\n{cfg.objective}: {result['step']} steps in {time.perf_counter() - started:.0f} s -> {cfg.out}/")
        print(report.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
