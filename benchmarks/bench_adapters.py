"""Cost of the host adapters: one host-style training step with and without them.

    python benchmarks/bench_adapters.py [--size 64] [--batch 4] [--width 16] [--seg-base 32] [--steps 7] [--threads 1]
    python benchmarks/bench_adapters.py --meta [--size 512] [--batch 8] [--seg-base 32]   # real size, no compute

Default mode, tiny networks on the CPU: per host (AOT-GAN, LaMa) and variant (baseline, SCAT, SCAT + contrastive)
the minimum and median wall time of a full host-style step (forward, both backward passes, both optimiser steps)
after two warm-up rounds, the variants run round-robin in one process so that load drifts hit them alike; the
bytes autograd holds for backward during the step (unique storages: activations plus the weights autograd keeps);
and the extra parameters. Stand-ins copy the hosts' layouts: AOT-GAN's SN-PatchGAN (``conv`` Sequential, in-place
LeakyReLU), LaMa's NLayerDiscriminator (``model0..`` blocks, BatchNorm, returns ``(logits, features)``); the
generators are small encoder-decoders, so the full-resolution segmenter dominates and the ratios are far above
real-size ones.

``--meta``: AOT-GAN-size networks (``examples/aotgan``'s generator, base 64, 8 AOT blocks; the SN-PatchGAN at width
64; ``UNetSegmenter(base_channels=--seg-base)``) on PyTorch's meta device; counts, for one step, the FLOPs (forward
+ backward, ``torch.utils.flop_counter``) and the bytes held for backward, without running anything. The negatives'
boolean indexing is counted as if all ``B*B`` negatives ran (``B*(B-1)`` do): contrastive figures are upper bounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from scatloss.adapters.aotgan import SCATDiscriminator, SCATGANLoss
from scatloss.adapters.lama import SCATAdversarialLoss
from scatloss.nets import UNetSegmenter


class AOTDiscriminator(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            spectral_norm(nn.Conv2d(3, c, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(4 * c, 8 * c, 4, 1, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * c, 1, 4, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LaMaDiscriminator(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.model0 = nn.Sequential(nn.Conv2d(3, c, 4, 2, 2), nn.LeakyReLU(0.2, True))
        self.model1 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, 2, 2), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, True))
        self.model2 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 4, 2, 2), nn.BatchNorm2d(4 * c), nn.LeakyReLU(0.2, True))
        self.model3 = nn.Sequential(nn.Conv2d(4 * c, 8 * c, 4, 1, 2), nn.BatchNorm2d(8 * c), nn.LeakyReLU(0.2, True))
        self.model4 = nn.Sequential(nn.Conv2d(8 * c, 1, 4, 1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for block in (self.model0, self.model1, self.model2, self.model3, self.model4):
            x = block(x)
            feats.append(x)
        return x, feats[:-1]


class Generator(nn.Module):
    def __init__(self, c: int, out: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, c, 7, padding=3), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.ReLU(),
            *(m for _ in range(4) for m in (nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.ReLU())),
            nn.Upsample(scale_factor=2.0), nn.Conv2d(4 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2.0), nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 3, 3, padding=1),
        )  # fmt: skip
        self.out = out

    def forward(self, masked: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(torch.cat([masked, hole], 1)))


class HingePatchLoss:
    """A stock-style AOT-GAN adversarial loss: three D passes (G's, D's fake, D's real), hinge on every patch."""

    def __call__(self, netD, fake, real, masks):  # noqa: ANN001, ANN204
        g_fake, d_fake, d_real = netD(fake), netD(fake.detach()), netD(real)
        dis = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return dis, -g_fake.mean()


class SavedBytes:
    """Bytes autograd saves for backward inside the block (unique storages)."""

    def __enter__(self) -> SavedBytes:
        self.sizes: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            self.sizes[storage._cdata] = storage.nbytes()  # storage identity (meta tensors have no data_ptr)
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    @property
    def mib(self) -> float:
        return self.total / 2**20


def masks_for(b: int, size: int) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    for i in range(b):
        a = size // 8 + i * size // 16
        m[i, :, a : a + size // 2, size // 4 : size // 4 + size // 2] = 1
    return m


def aot_variant(args: argparse.Namespace, variant: str) -> tuple[Callable[[], float], int]:
    torch.manual_seed(0)
    netG = Generator(args.width, torch.tanh)
    optimG = torch.optim.Adam(netG.parameters(), 1e-4)
    netD: nn.Module = AOTDiscriminator(args.width)
    extra = 0
    if variant == "baseline":
        adv_loss = HingePatchLoss()
    else:
        layers = {} if variant == "scat+contrastive" else {"textural_layers": (), "semantic_layer": None}
        netD = SCATDiscriminator(netD, UNetSegmenter(3, base_channels=args.seg_base), **layers)
        optimG.add_param_group({"params": list(netD.generator_parameters())})
        extra = sum(p.numel() for p in netD.segmenter.parameters()) + sum(
            p.numel() for p in netD.generator_parameters()
        )
        adv_loss = SCATGANLoss(host_adv_weight=0.01)
    optimD = torch.optim.Adam(netD.parameters(), 1e-4)
    images = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    masks = masks_for(args.batch, args.size)

    def step() -> float:
        with SavedBytes() as saved:
            pred = netG(images * (1 - masks) + masks, masks)
            comp = (1 - masks) * images + masks * pred
            losses = {"l1": (pred - images).abs().mean()}
            dis_loss, gen_loss = adv_loss(netD, comp, images, masks)
            losses["advg"] = gen_loss * 0.01
        optimG.zero_grad()
        optimD.zero_grad()
        sum(losses.values()).backward()
        optimG.step()
        dis_loss.backward()
        optimD.step()
        return saved.mib

    return step, extra


def lama_variant(args: argparse.Namespace, variant: str) -> tuple[Callable[[], float], int]:
    torch.manual_seed(0)
    G, D = Generator(args.width, torch.sigmoid), LaMaDiscriminator(args.width)
    loss = None
    extra = 0
    g_params, d_params = list(G.parameters()), list(D.parameters())
    if variant != "baseline":
        kw = {}
        if variant == "scat+contrastive":
            kw = {
                "textural_layers": ("model0", "model1", "model2"),
                "semantic_layer": "model3",
                "feature_dim": 8 * args.width,
            }
        loss = SCATAdversarialLoss(segmenter=UNetSegmenter(3, base_channels=args.seg_base), **kw)
        g_params += list(loss.generator_parameters())
        d_params += list(loss.discriminator_parameters())
        extra = sum(p.numel() for p in loss.parameters())
    optG, optD = torch.optim.Adam(g_params, 1e-4), torch.optim.Adam(d_params, 1e-4)
    img = torch.rand(args.batch, 3, args.size, args.size)
    mask = masks_for(args.batch, args.size)

    def step() -> float:
        with SavedBytes() as saved:  # generator step
            pred = G(img * (1 - mask), mask)
            total = (pred - img).abs().mean()
            if loss is not None:
                loss.pre_generator_step(img, pred, G, D)
            real_p, _ = D(img)
            fake_p, _ = D(pred)
            if loss is None:
                total = total + F.softplus(-fake_p).mean() * 10
            else:
                total = total + loss.generator_loss(img, pred, real_p, fake_p, mask)[0]
        optG.zero_grad()
        total.backward()
        optG.step()
        mem_g = saved.mib
        with SavedBytes() as saved:  # discriminator step (Lightning re-runs the generator)
            with torch.no_grad():
                pred = G(img * (1 - mask), mask)
            if loss is not None:
                loss.pre_discriminator_step(img, pred, G, D)
            real_p, _ = D(img)
            fake_p, _ = D(pred)
            if loss is None:
                d_total = F.softplus(-real_p).mean() + F.softplus(fake_p).mean()
            else:
                d_total = loss.discriminator_loss(img, pred, real_p, fake_p, mask)[0]
        optD.zero_grad()
        d_total.backward()
        optD.step()
        return max(mem_g, saved.mib)

    return step, extra


def meta_counts(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    import torch.fx.experimental._config as fx_config
    from torch.utils.flop_counter import FlopCounterMode

    import scatloss

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.aotgan.networks import AOTGenerator

    fx_config.meta_nonzero_assume_all_nonzero = True  # boolean indexing of the negatives on meta tensors
    scatloss.set_value_checks(False)  # value checks read data back, which meta tensors have not
    print(
        f"AOT-GAN size, meta device, batch {args.batch}, {args.size}x{args.size}, "
        f"UNetSegmenter(base_channels={args.seg_base}): one step, FLOPs and saved bytes"
    )
    base: tuple[float, float] | None = None
    for variant in ("baseline", "scat", "scat+contrastive"):
        with torch.device("meta"):
            netG, netD = AOTGenerator(base_channels=64, num_blocks=8), AOTDiscriminator(64)
            if variant == "baseline":
                adv_loss = HingePatchLoss()
            else:
                layers = {} if variant == "scat+contrastive" else {"textural_layers": (), "semantic_layer": None}
                netD = SCATDiscriminator(netD, UNetSegmenter(3, base_channels=args.seg_base), **layers)
                adv_loss = SCATGANLoss(host_adv_weight=0.01)
            images, masks = (
                torch.empty(args.batch, 3, args.size, args.size),
                torch.empty(args.batch, 1, args.size, args.size),
            )
            with FlopCounterMode(display=False) as flops, SavedBytes() as saved:
                pred = netG(images * (1 - masks) + masks, masks)
                comp = (1 - masks) * images + masks * pred
                dis_loss, gen_loss = adv_loss(netD, comp, images, masks)
                ((pred - images).abs().mean() + 0.01 * gen_loss).backward()
                dis_loss.backward()
        tflop, gib = flops.get_total_flops() / 1e12, saved.total / 2**30
        base = base or (tflop, gib)
        print(
            f"{variant:17} {tflop:7.2f} TFLOP ({tflop / base[0]:4.2f}x)   saved {gib:6.2f} GiB ({gib / base[1]:4.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta", action="store_true", help="count FLOPs and saved bytes of an AOT-GAN-size step")
    parser.add_argument("--size", type=int, default=None, help="image size (default 64; 512 with --meta)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 4; 8 with --meta)")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seg-base", type=int, default=32, help="UNetSegmenter base_channels (default 32)")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.size = args.size or (512 if args.meta else 64)
    args.batch = args.batch or (8 if args.meta else 4)
    if args.meta:
        meta_counts(args)
        return
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, CPU, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size}, "
        f"D width {args.width}, UNetSegmenter(base_channels={args.seg_base}, depth=4), head 256-256, negatives='batch'"
    )
    header = ("host", "variant", "min s/step", "ratio", "median", "ratio", "saved MiB", "ratio", "extra params")
    print("{:8} {:17} {:>10} {:>6} {:>7} {:>6} {:>9} {:>6} {:>12}".format(*header))
    variants = ("baseline", "scat", "scat+contrastive")
    for host, setup in (("AOT-GAN", aot_variant), ("LaMa", lama_variant)):
        steps = {v: setup(args, v) for v in variants}
        times: dict[str, list[float]] = {v: [] for v in variants}
        mem: dict[str, float] = {}
        for i in range(args.steps + 2):  # round-robin, so load drifts hit every variant alike
            for v in variants:
                t0 = time.perf_counter()
                mem[v] = steps[v][0]()
                if i >= 2:
                    times[v].append(time.perf_counter() - t0)
        lo0, med0 = min(times["baseline"]), statistics.median(times["baseline"])
        for v in variants:
            lo, med = min(times[v]), statistics.median(times[v])
            print(
                f"{host:8} {v:17} {lo:10.4f} {lo / lo0:6.2f} {med:7.4f} {med / med0:6.2f} "
                f"{mem[v]:9.1f} {mem[v] / mem['baseline']:6.2f} {steps[v][1]:12,d}"
            )


if __name__ == "__main__":
    main()
