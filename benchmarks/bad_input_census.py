"""Census of bad and extreme inputs at scatloss's public API (issue 13): how each call ends.

Every case is a call with one thing wrong (or extreme) and an expectation: ``"error"`` (the input is bad: a
``TypeError``/``ValueError`` naming the argument is the right answer) or a correct value (a legal extreme input,
compared against an independent float64 computation written here). Each outcome is classified as

* **named error**: ``TypeError`` / ``ValueError`` whose message reads ``"<argument>: expected ..."`` (or names
  the mismatch, ``"batch size mismatch: expected ..."``), for a bad input;
* **correct**: the right value for a legal input (also: NaN in, NaN out where that is documented);
* **unclear error**: any other exception (``AssertionError``, ``IndexError``, ``ZeroDivisionError``, a torch
  ``RuntimeError`` from deep inside, an error for a legal input, ...);
* **silent NaN/Inf**: a non-finite result where an error or a finite value was due;
* **silent wrong**: a finite result for a bad input, or a wrong finite value for a legal one.

Only the API that existed before issue 13 is called, so the script runs unchanged against an older checkout::

    git worktree add /tmp/base 535f156
    PYTHONPATH=/tmp/base .venv/bin/python benchmarks/bad_input_census.py     # before
    PYTHONPATH=. .venv/bin/python benchmarks/bad_input_census.py             # after

``--list`` prints every case with its outcome. CPU only, a few seconds.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import scatloss
import scatloss.functional as SF
from scatloss.masks import MaskGenerator, hole_ratio, resample_hole
from scatloss.nets import UNetDiscriminator, UNetSegmenter

ERROR = "error"
CLASSES = ("named error", "correct", "unclear error", "silent NaN/Inf", "silent wrong")
_NAMED = re.compile(
    r"^[\w\[\]().,' -]+: expected|^(batch size|device) mismatch: expected|^feature lists: (layer \d+ )?expected"
)

Case = tuple[str, Callable[[], Any], Any]  # (name, call, ERROR or expected value)


def classify(call: Callable[[], Any], expected: Any) -> tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except (TypeError, ValueError) as exc:
        if expected is ERROR and _NAMED.search(str(exc)):
            return "named error", f"{type(exc).__name__}: {str(exc)[:100]}"
        return "unclear error", f"{type(exc).__name__}: {str(exc)[:100]}"
    except Exception as exc:  # noqa: BLE001 - the census records whatever escapes
        return "unclear error", f"{type(exc).__name__}: {str(exc)[:100]}"
    values = _tensors(out)
    finite = all(torch.isfinite(v).all() for v in values if v.device.type != "meta" and v.is_floating_point())
    if expected is ERROR:
        return ("silent wrong" if finite else "silent NaN/Inf"), "returned a result for a bad input"
    if callable(expected):
        ok = bool(expected(out))
    else:
        ok = _close(out, expected)
    if ok:
        return "correct", ""
    return ("silent NaN/Inf" if not finite else "silent wrong"), f"got {_short(out)}"


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _close(out: Any, expected: Any) -> bool:
    if not isinstance(out, torch.Tensor):
        return False
    want = torch.as_tensor(expected, dtype=torch.float64)
    got = out.detach().double()
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True))


def _short(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"tensor {tuple(out.shape)} {out.flatten()[:3].tolist() if out.device.type != 'meta' else 'meta'}"
    return type(out).__name__


# ----------------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------------

B, H, W = 2, 8, 8
G = torch.Generator().manual_seed(0)
LOGITS = torch.randn(B, 1, H, W, generator=G)
REAL_LOGITS = torch.randn(B, 1, H, W, generator=G)
HOLE = torch.zeros(B, 1, H, W)
HOLE[:, :, 2:6, 2:6] = 1.0
IMG = torch.rand(B, 3, H, W, generator=G) * 2 - 1
PRED = torch.rand(B, 3, H, W, generator=G) * 2 - 1
FEATS = [torch.randn(B, 4, 4, 4, generator=G), torch.randn(B, 8, 2, 2, generator=G)]
POS = [f + 0.1 * torch.randn(f.shape, generator=G) for f in FEATS]
NEG = [f + torch.randn(f.shape, generator=G) for f in FEATS]
VA, VP, VN = torch.randn(B, 16, generator=G), torch.randn(B, 16, generator=G), torch.randn(B, 5, 16, generator=G)
META = torch.empty(B, 1, H, W, device="meta")


def bad_tensor_variants(x: torch.Tensor, *, hole: bool = False) -> dict[str, Any]:
    """Bad versions of a tensor argument (each expects a named error)."""
    out: dict[str, Any] = {
        "a list": x.tolist(),
        "None": None,
        "a numpy array": x.numpy(),
        "int64 dtype": (x * 10).long(),
        "one dim less": x[:, 0] if x.dim() > 2 else x[0],
        "batch 1 (others 2)": x[:1],
        "batch 0": x[:0],
        "2 channels" if x.dim() == 4 else "extra dim": torch.cat([x, x], dim=1) if x.dim() == 4 else x[None],
        "meta mixed with cpu": torch.empty_like(x, device="meta"),
    }
    if hole:
        out["values in [0, 2]"] = x * 2
        out["values in [-1, 0]"] = x - 1
        out["NaN values"] = x.masked_fill(x > 0.5, math.nan)
        del out["int64 dtype"]
        out["int64 mask"] = x.long()
    return out


def _infonce64(a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, t: float = 0.07) -> float:
    a, p, n = (F.normalize(x.double(), dim=-1) for x in (a, p, n))
    logits = torch.cat([(a * p).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", a, n)], dim=1) / t
    return float((torch.logsumexp(logits, dim=1) - logits[:, 0]).mean())


def _gen_ls_ref(z: torch.Tensor, hole: torch.Tensor) -> float:
    z, hole = z.double(), hole.double()
    return float(torch.where(hole != 0, (z - 1) ** 2 * hole, torch.zeros_like(z)).mean())


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, call: Callable[[], Any], expected: Any = ERROR) -> None:
        out.append((name, call, expected))

    # ---- tensor arguments of the functional losses ------
    functions: dict[str, tuple[Callable[..., Any], dict[str, torch.Tensor], set[str]]] = {
        "scat_segmenter_loss": (
            SF.scat_segmenter_loss,
            {"fake_logits": LOGITS, "real_logits": REAL_LOGITS, "hole": HOLE},
            {"hole"},
        ),
        "scat_generator_loss": (SF.scat_generator_loss, {"fake_logits": LOGITS, "hole": HOLE}, {"hole"}),
        "reconstruction_loss": (SF.reconstruction_loss, {"prediction": PRED, "image": IMG}, set()),
        "composite": (SF.composite, {"prediction": PRED, "image": IMG, "hole": HOLE}, {"hole"}),
        "corrupt": (SF.corrupt, {"image": IMG, "hole": HOLE}, {"hole"}),
        "semantic_contrastive_loss": (
            SF.semantic_contrastive_loss,
            {"anchor": VA, "positive": VP, "negatives": VN},
            set(),
        ),
        "adversarial_discriminator_loss": (
            SF.adversarial_discriminator_loss,
            {"fake_logits": LOGITS, "real_logits": REAL_LOGITS},
            set(),
        ),
    }
    for fname, (fn, args, holes) in functions.items():
        for arg, value in args.items():
            for what, bad in bad_tensor_variants(value, hole=arg in holes).items():
                if fname == "adversarial_discriminator_loss" and what in (
                    "one dim less",
                    "2 channels",
                    "batch 1 (others 2)",
                ):
                    continue  # (B, ...) logits of any shape, real and fake batches may differ: legal
                if fname in ("composite", "corrupt") and what == "batch 0":
                    continue  # elementwise: an empty batch in, an empty batch out is correct
                if fname == "corrupt" and arg == "image" and what == "2 channels":
                    continue  # any number of image channels is legal
                kwargs = {**args, arg: bad}
                positional = [kwargs[k] for k in args]
                add(f"{fname}: {arg} {what}", lambda fn=fn, p=positional: fn(*p))
    # the textural loss takes lists
    for what, bad in bad_tensor_variants(FEATS[0]).items():
        add(
            f"textural_contrastive_loss: anchor_feats[0] {what}",
            lambda b=bad: SF.textural_contrastive_loss([b, FEATS[1]], POS, NEG),
        )
    add(
        "textural_contrastive_loss: lists of different lengths",
        lambda: SF.textural_contrastive_loss(FEATS, POS[:1], NEG),
    )
    add("adversarial_generator_loss: batch 0", lambda: SF.adversarial_generator_loss(LOGITS[:0]))
    add("adversarial_generator_loss: a list", lambda: SF.adversarial_generator_loss(LOGITS.tolist()))

    # ---- extreme but legal values: a correct answer is due ------
    for scale in (1e20, 1e30, 1e-25):
        for dtype in (torch.float32, torch.bfloat16):
            a = (VA * scale).to(dtype)
            add(
                f"semantic_contrastive_loss: anchor norm x{scale:g} ({str(dtype)[6:]})",
                lambda a=a: SF.semantic_contrastive_loss(a, VP.to(a.dtype), VN.to(a.dtype)),
                _infonce64((VA * scale).to(dtype), VP.to(dtype), VN.to(dtype)),
            )
    for scale in (1e20, 1e36):
        n = VN * scale
        add(
            f"semantic_contrastive_loss: negatives norm x{scale:g}",
            lambda n=n: SF.semantic_contrastive_loss(VA, VP, n),
            _infonce64(VA, VP, n),
        )
    for value in (3e19, -1e25, 1e38):
        z = LOGITS.clone()
        z[0, 0, 0, 0] = value  # a known pixel (weight 0)
        add(
            f"scat_generator_loss kind='ls': masked-out logit {value:g}",
            lambda z=z: SF.scat_generator_loss(z, HOLE, kind="ls"),
            _gen_ls_ref(z, HOLE),
        )
    add(
        "scat_generator_loss: all-hole mask",
        lambda: SF.scat_generator_loss(LOGITS, torch.ones_like(HOLE)),
        float(-LOGITS.double().mean()),
    )
    add("scat_generator_loss: hole-free mask", lambda: SF.scat_generator_loss(LOGITS, torch.zeros_like(HOLE)), 0.0)
    add(
        "textural_contrastive_loss: hole-free mask (a == p == n)",
        lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS),
        0.0,
    )
    add(
        "textural_contrastive_loss: eps 1e-50 with a == p == n (float32)",
        lambda: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=1e-50),
        0.0,
    )
    add(
        "semantic_contrastive_loss: zero anchor",
        lambda: SF.semantic_contrastive_loss(torch.zeros_like(VA), VP, VN),
        math.log(1 + VN.shape[1]),
    )
    add(
        "scat_segmenter_loss: NaN logits (documented propagation)",
        lambda: SF.scat_segmenter_loss(torch.full_like(LOGITS, math.nan), REAL_LOGITS, HOLE),
        lambda out: bool(torch.isnan(out)),
    )
    add(
        "scat_generator_loss: meta tensors (shape inference)",
        lambda: SF.scat_generator_loss(META, torch.empty(B, 1, H, W, device="meta")),
        lambda out: out.device.type == "meta" and out.shape == (),
    )
    add(
        "composite: meta tensors (shape inference)",
        lambda: SF.composite(torch.empty_like(IMG, device="meta"), torch.empty_like(IMG, device="meta"), META),
        lambda out: out.device.type == "meta" and out.shape == IMG.shape,
    )

    # ---- options ------
    for eps in (math.nan, math.inf, -1.0, 0.0, "1e-7"):
        add(
            f"textural_contrastive_loss: eps={eps!r}",
            lambda eps=eps: SF.textural_contrastive_loss(FEATS, FEATS, FEATS, eps=eps),
        )
        add(
            f"TexturalContrastiveLoss(eps={eps!r})",
            lambda eps=eps: scatloss.TexturalContrastiveLoss(eps=eps)(FEATS, FEATS, FEATS),
        )
    for fill in (math.nan, math.inf, "white", None):
        add(f"corrupt: fill={fill!r}", lambda fill=fill: SF.corrupt(IMG, HOLE, fill=fill))
    for t in (0.0, -1.0, math.nan, math.inf, 1e-45, "0.07"):
        add(
            f"semantic_contrastive_loss: temperature={t!r}",
            lambda t=t: SF.semantic_contrastive_loss(VA, VP, VN, temperature=t),
        )
        add(
            f"SemanticContrastiveLoss(temperature={t!r})",
            lambda t=t: scatloss.SemanticContrastiveLoss(temperature=t)(VA, VP, VN),
        )
    for lam in ("lambda_adv", "lambda_text", "lambda_sem", "lambda_rec"):
        for v in (math.inf, math.nan, -1.0, "10"):
            add(
                f"InpaintingObjective({lam}={v!r})",
                lambda lam=lam, v=v: scatloss.InpaintingObjective(**{lam: v})(PRED, IMG, HOLE),
            )
    add("semantic_contrastive_loss: normalize='no'", lambda: SF.semantic_contrastive_loss(VA, VP, VN, normalize="no"))
    add(
        "textural_contrastive_loss: per_sample='no'",
        lambda: SF.textural_contrastive_loss(FEATS, POS, NEG, per_sample="no"),
    )
    add(
        "MaskGenerator.load_state_dict: height='eight'",
        lambda: MaskGenerator(8, 8).load_state_dict({**MaskGenerator(8, 8).state_dict(), "height": "eight"}),
    )
    for opt, fn in (
        ("kind", lambda v: SF.scat_generator_loss(LOGITS, HOLE, kind=v)),
        ("region", lambda v: SF.scat_generator_loss(LOGITS, HOLE, region=v)),
        ("resample", lambda v: SF.scat_generator_loss(LOGITS, HOLE, resample=v)),
        ("reduction", lambda v: SF.reconstruction_loss(PRED, IMG, reduction=v)),
        ("backend", lambda v: SF.semantic_contrastive_loss(VA, VP, VN, backend=v)),
    ):
        for v in ("bogus", None, 1):
            add(f"{opt}={v!r}", lambda fn=fn, v=v: fn(v))

    # ---- masks.resample_hole and hole_ratio ------
    for what, bad in bad_tensor_variants(HOLE, hole=True).items():
        if what in ("batch 1 (others 2)", "batch 0", "meta mixed with cpu"):
            continue  # one tensor argument: nothing to mismatch
        add(f"resample_hole: hole {what}", lambda b=bad: resample_hole(b, (4, 4)))
        add(f"hole_ratio: hole {what}", lambda b=bad: hole_ratio(b))
    for size in ((4.5, 4), (0, 4), (-2, 4), 4, "4x4"):
        add(f"resample_hole: size={size!r}", lambda size=size: resample_hole(HOLE, size))
    add(
        "resample_hole: upsampling (legal)",
        lambda: resample_hole(HOLE, (16, 16), "nearest"),
        F.interpolate(HOLE, size=(16, 16)),
    )

    # ---- InpaintingObjective ------
    objective = scatloss.InpaintingObjective()
    add("InpaintingObjective: 2-channel hole", lambda: objective(PRED, IMG, HOLE.expand(B, 2, H, W)))
    add("InpaintingObjective: hole of another size", lambda: objective(PRED, IMG, HOLE[..., :4, :4]))
    add("InpaintingObjective: hole values in [0, 2]", lambda: objective(PRED, IMG, HOLE * 2))
    add(
        "InpaintingObjective: meta prediction, cpu image",
        lambda: objective(torch.empty_like(PRED, device="meta"), IMG, HOLE),
    )

    # ---- SCATCriterion ------
    torch.manual_seed(0)
    d = UNetDiscriminator(base_channels=4, depth=2, max_channels=8)
    crit = scatloss.SCATCriterion(d, textural_layers=d.textural_layers, semantic_layer=d.semantic_layer)
    masks = MaskGenerator(16, 16, seed=0).sample(4)
    image = torch.rand(4, 3, 16, 16, generator=G) * 2 - 1
    pred = (torch.rand(4, 3, 16, 16, generator=G) * 2 - 1).requires_grad_()
    comp = masks * pred.detach() + (1 - masks) * image
    for step in ("generator_step", "discriminator_step"):
        run = getattr(crit, step)
        add(f"SCATCriterion.{step}: hole mask inverted (1 = known)", lambda run=run: run(pred, image, 1 - masks))
        add(f"SCATCriterion.{step}: composite with an inverted mask", lambda run=run: run(comp, image, 1 - masks))
        add(f"SCATCriterion.{step}: images in [0, 1]", lambda run=run: run(pred, (image + 1) / 2, masks))
        add(f"SCATCriterion.{step}: images in [0, 255]", lambda run=run: run(pred, (image + 1) * 127.5, masks))
        add(f"SCATCriterion.{step}: batch 0", lambda run=run: run(pred[:0], image[:0], masks[:0]))
        add(
            f"SCATCriterion.{step}: float64 inputs, float32 D",
            lambda run=run: run(pred.double(), image.double(), masks),
        )
        add(
            f"SCATCriterion.{step}: meta prediction",
            lambda run=run: run(torch.empty_like(pred, device="meta"), image, masks),
        )
        add(f"SCATCriterion.{step}: 2-channel hole", lambda run=run: run(pred, image, masks.expand(4, 2, 16, 16)))
        add(f"SCATCriterion.{step}: hole values in [0, 2]", lambda run=run: run(pred, image, masks * 2))
        add(
            f"SCATCriterion.{step}: all-hole masks (legal)",
            lambda run=run: run(pred, image, torch.ones_like(masks)),
            lambda out: bool(torch.isfinite(out["total"])),
        )
    add("SCATCriterion.generator_step: prediction and image swapped", lambda: crit.generator_step(image, pred, masks))
    add("SCATCriterion(fill='white')", lambda: scatloss.SCATCriterion(d, fill="white"))
    add("SCATCriterion(fill=nan)", lambda: scatloss.SCATCriterion(d, fill=math.nan)(pred, image, masks))
    with torch.device("meta"):
        d_meta = UNetDiscriminator(base_channels=4, depth=2, max_channels=8)
    crit_meta = scatloss.SCATCriterion(
        d_meta, textural_layers=d_meta.textural_layers, semantic_layer=d_meta.semantic_layer
    )
    mi = torch.empty(4, 3, 16, 16, device="meta")
    add(
        "SCATCriterion on meta (shape inference)",
        lambda: crit_meta.generator_step(mi.clone().requires_grad_(), mi, torch.empty(4, 1, 16, 16, device="meta")),
        lambda out: all(v.device.type == "meta" and v.shape == () for v in out.values()),
    )

    # ---- the LaMa adapter's patch maps ------
    try:
        from scatloss.adapters.lama import SCATAdversarialLoss
    except ImportError:  # pragma: no cover
        SCATAdversarialLoss = None  # noqa: N806
    if SCATAdversarialLoss is not None:
        lama = SCATAdversarialLoss(segmenter=UNetSegmenter(3, base_channels=4, depth=2), mask_as_fake_target=True)
        real = torch.rand(2, 3, 16, 16, generator=G)
        hole = torch.zeros(2, 1, 16, 16)
        hole[:, :, 4:10, 4:10] = 1.0
        fake = real * (1 - hole) + hole * torch.rand(2, 3, 16, 16, generator=G)
        ok = torch.zeros(2, 1, 5, 5)
        for what, pred_map in (("batch 1", torch.zeros(1, 1, 5, 5)), ("2 channels", torch.zeros(2, 2, 5, 5))):
            add(
                f"LaMa generator_loss: discr_fake_pred {what}",
                lambda p=pred_map: lama.generator_loss(real, fake, ok, p, hole),
            )
            add(
                f"LaMa discriminator_loss: discr_real_pred {what}",
                lambda p=pred_map: lama.discriminator_loss(real, fake, p, ok, hole),
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print every case and its outcome")
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts: Counter[str] = Counter()
    rows = []
    for name, call, expected in cases():
        outcome, detail = classify(call, expected)
        counts[outcome] += 1
        rows.append((outcome, name, detail))
    if args.list:
        for outcome, name, detail in rows:
            print(f"{outcome:15s} | {name} | {detail}")
        print()
    print(f"scatloss from {scatloss.__file__}")
    total = sum(counts.values())
    print(f"{total} cases: " + ", ".join(f"{counts[c]} {c}" for c in CLASSES))
    sys.exit(0)


if __name__ == "__main__":
    main()
