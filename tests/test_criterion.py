"""Tests for scatloss.criterion.SCATCriterion: least work, exactly the naive (released) gradients.

The rules checked here, one test (family) each:

* a fast generator step runs the discriminator once with autograd (on the composite); the ground
  truth, corrupted input and negatives run without autograd, with early exit (no decoder), in chunks;
* generator and projection-head gradients equal those of ``mode="naive"`` (float64, D in eval mode)
  for both layouts, both kinds of negatives, vector and map semantic features with every pool, any
  textural layers, batch sizes 1-3 and odd image sizes;
* only the composite pass advances spectral-norm / BatchNorm buffers; ``freeze_discriminator``
  restores ``requires_grad`` even after an exception and keeps D's ``.grad`` empty;
* the discriminator step equals the functional losses; term subsets do only their work;
* bad inputs raise ``ValueError``/``TypeError`` naming what is wrong; degenerate masks stay finite;
* ``benchmarks/bench_step.py`` still runs (smoke, no timing asserted).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from scatloss import functional as SF
from scatloss.criterion import SCATCriterion
from scatloss.losses import InpaintingObjective
from scatloss.masks import MaskGenerator
from scatloss.nets import UNetDiscriminator, UNetSegmenter
from scatloss.taps import FeatureTap

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64
TOL = 1e-10  # relative gradient difference allowed between fast and naive (float64 round-off, as the terms)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny float64 networks: one intra-op thread is faster and steadier on shared CPU cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# networks and helpers
# --------------------------------------------------------------------------------------------------


class SimpleD(nn.Module):
    """A global-logit discriminator (old-style ``nn.utils.spectral_norm``, optional BatchNorm).

    ``body``: conv s2 -> LReLU -> conv s2 [-> BatchNorm] -> LReLU; ``head``: Linear on the ReLU-sum-pooled
    map, so the pooled vector exists only as ``"head:input"``. Returns a ``(B, 1)`` tensor.
    """

    def __init__(self, c: int = 4, batchnorm: bool = False) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        layers: list[nn.Module] = [
            sn(nn.Conv2d(3, c, 3, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)),
        ]
        if batchnorm:
            layers.append(nn.BatchNorm2d(2 * c))
        layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers)
        self.head = sn(nn.Linear(2 * c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)).sum(dim=(2, 3)))


def small_d(depth: int = 3) -> UNetDiscriminator:
    return UNetDiscriminator(base_channels=4, depth=depth, max_channels=16)


def small_s() -> UNetSegmenter:
    return UNetSegmenter(base_channels=4, depth=3, max_channels=16)


def make_nets(layout: str, dtype: torch.dtype = F64, depth: int = 3) -> tuple[nn.Module, nn.Module | None, dict]:
    """``(D, S, criterion output kwargs)`` for a layout, in eval mode."""
    torch.manual_seed(0)
    if layout == "twohead":
        D, S, kw = small_d(depth), None, {}
    elif layout == "unet+seg":  # separate networks; D's pixel head unused
        D, S, kw = small_d(depth), small_s(), {"pixel_output": None}
    elif layout == "simple+seg":
        D, S, kw = SimpleD(), small_s(), {}
    else:  # pragma: no cover
        raise AssertionError(layout)
    D = D.to(dtype).eval()
    S = S.to(dtype).eval() if S is not None else None
    return D, S, kw


def make_batch(b: int, h: int, w: int, dtype: torch.dtype = F64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(prediction, image, hole)``: images in [-1, 1], a free-form hole mask."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=gen, dtype=dtype) * 2 - 1
    prediction = torch.rand(b, 3, h, w, generator=gen, dtype=dtype) * 2 - 1
    hole = MaskGenerator(h, w, seed=seed + 1).sample(b).to(dtype)
    return prediction, image, hole


def semantic_dim(D: nn.Module, layer: str, pool: str, h: int, w: int) -> int:
    feat = FeatureTap(D, [layer]).features(torch.zeros(1, 3, h, w, dtype=next(D.parameters()).dtype))[layer]
    if feat.dim() == 2:
        return feat.shape[1]
    return feat[0].numel() if pool == "flatten" else feat.shape[1]


def seeded_sampler(h: int, w: int, seed: int = 7) -> Any:
    """A fresh-mask source: two samplers with the same seed give the same masks."""
    gen = MaskGenerator(h, w, seed=seed)
    return lambda n, height, width: gen.sample(n)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def run_step(crit: SCATCriterion, prediction: torch.Tensor, image: torch.Tensor, hole: torch.Tensor):
    """One generator step + backward: ``(terms, prediction.grad, head grads)``."""
    p = prediction.clone().requires_grad_(True)
    for q in crit.parameters():
        q.grad = None
    terms = crit.generator_step(p, image, hole)
    terms["total"].backward()
    return {k: v.detach() for k, v in terms.items()}, p.grad, [q.grad for q in crit.parameters()]


@dataclass
class Call:
    name: str
    grad: bool
    batch: int
    frozen: bool
    x: torch.Tensor | None = None


@contextlib.contextmanager
def record_calls(net: nn.Module, label: str = "D") -> Iterator[list[Call]]:
    """Pre-hooks on ``net`` (recorded as ``label``) and on its decoder stages and pixel head."""
    calls: list[Call] = []
    handles = []

    def make(name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            frozen = all(not p.requires_grad for p in net.parameters())
            keep = x.detach().clone() if name == label and torch.is_grad_enabled() else None
            calls.append(Call(name, torch.is_grad_enabled(), x.shape[0], frozen, keep))

        return hook

    handles.append(net.register_forward_pre_hook(make(label)))
    for name, module in net.named_modules():
        if (name.startswith("decoder.") and name.count(".") == 1) or name == "pixel_head":
            handles.append(module.register_forward_pre_hook(make(f"{label}.{name}")))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def criterion(D: nn.Module, S: nn.Module | None = None, **kwargs: Any) -> SCATCriterion:
    """A criterion with the released taps of a U-Net discriminator unless overridden."""
    defaults: dict[str, Any] = {}
    if isinstance(D, UNetDiscriminator):
        defaults = {"textural_layers": D.textural_layers, "semantic_layer": D.semantic_layer}
    return SCATCriterion(D, segmenter=S, **{**defaults, **kwargs})


# --------------------------------------------------------------------------------------------------
# fast == naive gradients
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    layout: str
    negatives: str | int
    textural: tuple[str, ...]
    semantic: str
    pool: str = "relu_sum"


UNET_TEXT = ("encoder.0", "encoder.1", "encoder.2")
CASES = {
    # the release: two heads, batch negatives, pooled bottleneck vector
    "twohead-batch-vector": Case("twohead", "batch", UNET_TEXT, "global_head:input"),
    "twohead-M3-vector": Case("twohead", 3, UNET_TEXT, "global_head:input"),
    # feature maps, every pool; textural layers in any order, overlapping the semantic layer
    "twohead-batch-map-relu_sum": Case("twohead", "batch", ("encoder.1", "encoder.0"), "encoder.2", "relu_sum"),
    "twohead-M2-map-mean": Case("twohead", 2, ("encoder.2",), "encoder.1", "mean"),
    "twohead-M2-map-flatten": Case("twohead", 2, ("encoder.0", "encoder.2"), "encoder.2", "flatten"),
    # separate D and S (the paper's figure)
    "unet+seg-batch-vector": Case("unet+seg", "batch", UNET_TEXT, "global_head:input"),
    "unet+seg-M2-map-mean": Case("unet+seg", 2, ("encoder.0",), "encoder.1", "mean"),
    "simple+seg-batch-map-flatten": Case("simple+seg", "batch", ("body.1", "body.3"), "body.3", "flatten"),
    "simple+seg-M3-vector": Case("simple+seg", 3, ("body.0",), "head:input"),
    "simple+seg-M2-map-relu_sum": Case("simple+seg", 2, ("body.3", "body.1"), "body.2", "relu_sum"),
}


def make_pair(
    case: Case, h: int, w: int, depth: int = 3, chunk_size: int = 2, **kwargs: Any
) -> tuple[dict[str, SCATCriterion], nn.Module, nn.Module | None]:
    """A naive and a fast criterion on the same networks, with identical heads and mask samplers."""
    D, S, out = make_nets(case.layout, depth=depth)
    dim = semantic_dim(D, case.semantic, case.pool, h, w)
    torch.manual_seed(1)
    head = InpaintingObjective(in_features=dim, hidden_features=8, out_features=8).to(F64)
    crits = {
        mode: SCATCriterion(
            D,
            segmenter=S,
            textural_layers=case.textural,
            semantic_layer=case.semantic,
            semantic_pool=case.pool,  # type: ignore[arg-type]
            negatives=case.negatives,  # type: ignore[arg-type]
            mask_sampler=seeded_sampler(h, w) if isinstance(case.negatives, int) else None,
            objective=copy.deepcopy(head),
            chunk_size=chunk_size,
            mode=mode,  # type: ignore[arg-type]
            **out,
            **kwargs,
        )
        for mode in ("naive", "fast")
    }
    return crits, D, S


def assert_fast_equals_naive(crits: dict[str, SCATCriterion], batch: tuple[torch.Tensor, ...]) -> None:
    terms_n, grad_n, head_n = run_step(crits["naive"], *batch)
    terms_f, grad_f, head_f = run_step(crits["fast"], *batch)
    assert terms_f.keys() == terms_n.keys() == {"adv", "scat", "text", "sem", "rec", "total"}
    for k in terms_n:
        torch.testing.assert_close(terms_f[k], terms_n[k], rtol=1e-10, atol=1e-12, msg=f"term {k}")
    assert grad_n is not None and grad_f is not None and grad_n.abs().sum() > 0
    assert rel(grad_f, grad_n) <= TOL, f"prediction.grad differs by {rel(grad_f, grad_n):.2e}"
    assert len(head_f) == len(head_n) == 4
    for i, (gf, gn) in enumerate(zip(head_f, head_n, strict=True)):
        assert gf is not None and gf.abs().sum() > 0, f"head parameter {i} got no gradient in fast mode"
        assert rel(gf, gn) <= TOL, f"head parameter {i} gradient differs by {rel(gf, gn):.2e}"


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_generator_gradients_equal_naive(case: Case) -> None:
    crits, _, _ = make_pair(case, 16, 24)
    assert_fast_equals_naive(crits, make_batch(3, 16, 24))


@pytest.mark.parametrize("negatives", ["batch", 2], ids=["batch", "M2"])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_gradients_equal_naive_for_small_batches_and_odd_sizes(b: int, negatives: str | int) -> None:
    """Batches under 5 (the release asserts B >= 5) and a non-square 48x80 image with depth 4."""
    case = Case("twohead", negatives, ("encoder.0", "encoder.1", "encoder.2", "encoder.3"), "global_head:input")
    crits, _, _ = make_pair(case, 48, 80, depth=4)
    assert_fast_equals_naive(crits, make_batch(b, 48, 80, seed=b))


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 4),
    h=st.sampled_from([8, 16, 24]),
    w=st.sampled_from([8, 16, 24]),
    negatives=st.one_of(st.just("batch"), st.integers(1, 3)),
    chunk_size=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_fast_equals_naive_for_any_shape_negatives_and_chunking(
    b: int, h: int, w: int, negatives: str | int, chunk_size: int, seed: int
) -> None:
    case = Case("twohead", negatives, UNET_TEXT, "global_head:input")
    crits, _, _ = make_pair(case, h, w, chunk_size=chunk_size)
    assert_fast_equals_naive(crits, make_batch(b, h, w, seed=seed))


def test_projection_head_gets_gradients_in_fast_mode() -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D, objective=InpaintingObjective(in_features=D.feature_dim, hidden_features=8, out_features=8))
    crit = crit.to(F64)
    _, _, head = run_step(crit, *make_batch(2, 16, 16))
    assert len(head) == 4
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in head)
    # the criterion owns only the head: the discriminator is neither a parameter nor in the state dict
    assert {n for n, _ in crit.named_parameters()} == {f"objective.{n}" for n, _ in crit.objective.named_parameters()}
    assert all(k.startswith("objective.") for k in crit.state_dict())


# --------------------------------------------------------------------------------------------------
# one autograd discriminator forward, early exit, chunks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives", ["batch", 2], ids=["batch", "M2"])
def test_fast_step_runs_discriminator_once_with_autograd(negatives: str | int) -> None:
    b, h, w = 3, 16, 24
    D, _, _ = make_nets("twohead")
    crit = criterion(
        D, negatives=negatives, mask_sampler=seeded_sampler(h, w) if negatives != "batch" else None, chunk_size=32
    )
    prediction, image, hole = make_batch(b, h, w)
    prediction.requires_grad_(True)
    with record_calls(D) as calls:
        crit.generator_step(prediction, image, hole)["total"].backward()
    grad_calls = [c for c in calls if c.name == "D" and c.grad]
    nograd_calls = [c for c in calls if c.name == "D" and not c.grad]
    assert [(c.grad, c.batch) for c in grad_calls] == [(True, b)], "exactly one autograd forward, on B images"
    torch.testing.assert_close(grad_calls[0].x, SF.composite(prediction, image, hole).detach(), rtol=0, atol=0)
    assert grad_calls[0].frozen, "freeze_discriminator: D's parameters do not require grad during the forward"
    # x, x~ and the negatives (the diagonal of "batch" is x~ itself, not recomputed) without autograd
    m = b if negatives == "batch" else negatives
    expected = 2 * b + (b * m - b if negatives == "batch" else b * m)
    assert sum(c.batch for c in nograd_calls) == expected
    # the decoder and the pixel head ran exactly once per module: in the composite pass (early exit elsewhere)
    decoder = [c for c in calls if c.name != "D"]
    names = {f"D.decoder.{i}" for i in range(3)} | {"D.pixel_head"}
    assert sorted(c.name for c in decoder) == sorted(names)
    assert all(c.grad and c.batch == b for c in decoder)


def test_naive_step_runs_every_pass_in_full_with_autograd() -> None:
    b, h, w = 3, 16, 24
    D, _, _ = make_nets("twohead")
    crit = criterion(D, mode="naive")
    with record_calls(D) as calls:
        crit.generator_step(*make_batch(b, h, w))
    roots = [c for c in calls if c.name == "D"]
    # As the release: the composite twice (adversarial terms, then features), x, x~, the B*B negatives.
    assert [(c.grad, c.batch) for c in roots] == [(True, b), (True, b), (True, b), (True, b), (True, b * b)]
    assert not any(c.frozen for c in roots)
    decoder = [c for c in calls if c.name != "D"]
    assert len(decoder) == 5 * 4 and all(c.grad for c in decoder)  # 3 decoder stages + pixel head, 5 passes


def test_separate_segmenter_runs_once_with_autograd() -> None:
    b, h, w = 2, 16, 24
    D, S, out = make_nets("unet+seg")
    crit = criterion(D, S, negatives=2, **out)
    with record_calls(D) as d_calls, record_calls(S, "S") as s_calls:  # type: ignore[arg-type]
        crit.generator_step(*make_batch(b, h, w))
    assert [(c.grad, c.batch) for c in d_calls if c.name == "D" and c.grad] == [(True, b)]
    assert [(c.grad, c.batch) for c in s_calls if c.name == "S"] == [(True, b)]
    assert all(c.grad for c in d_calls if c.name != "D"), "D's decoder ran outside the composite pass"


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
@pytest.mark.parametrize("negatives", ["batch", 4], ids=["batch", "M4"])
def test_negatives_are_processed_in_bounded_chunks(chunk_size: int, negatives: str | int) -> None:
    b, h, w = 3, 16, 16
    D, _, _ = make_nets("twohead")
    sampler = seeded_sampler(h, w) if negatives != "batch" else None
    crit = criterion(D, negatives=negatives, mask_sampler=sampler, chunk_size=chunk_size)
    with record_calls(D) as calls:
        crit.generator_step(*make_batch(b, h, w))
    nograd = [c.batch for c in calls if c.name == "D" and not c.grad]
    assert nograd and max(nograd) <= chunk_size
    m = b if negatives == "batch" else negatives
    assert sum(nograd) == 2 * b + b * m - (b if negatives == "batch" else 0)


# --------------------------------------------------------------------------------------------------
# buffers, freezing, discriminator gradients
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["twohead", "simple+seg"])
def test_only_the_composite_pass_advances_buffers(layout: str) -> None:
    """Train mode: spectral norm (both APIs) and BatchNorm state == that after one plain forward on x-."""
    D, S, out = make_nets(layout)
    if layout == "simple+seg":
        torch.manual_seed(0)
        D = SimpleD(batchnorm=True).to(F64)
        kwargs = {"textural_layers": ("body.1",), "semantic_layer": "head:input"}
    else:
        kwargs = {}
    D.train()
    if S is not None:
        S.train()
    ref_d, ref_s = copy.deepcopy(D), copy.deepcopy(S)
    crit = criterion(D, S, negatives=2, chunk_size=2, **out, **kwargs)
    prediction, image, hole = make_batch(3, 16, 16)
    crit.generator_step(prediction.requires_grad_(True), image, hole)["total"].backward()
    with torch.no_grad():
        comp = SF.composite(prediction, image, hole)
        ref_d(comp)
        if ref_s is not None:
            ref_s(comp)
    for net, ref in ((D, ref_d), (S, ref_s)):
        if net is None:
            continue
        state, expected = net.state_dict(), ref.state_dict()
        assert state.keys() == expected.keys()
        for k in state:
            assert torch.equal(state[k], expected[k]), f"buffer/parameter {k} differs from one forward on x-"


def test_naive_mode_advances_buffers_in_every_pass() -> None:
    """The release's behaviour, documented: its extra train-mode forwards advance spectral norm too."""
    D, _, _ = make_nets("twohead")
    D.train()
    ref = copy.deepcopy(D)
    prediction, image, hole = make_batch(2, 16, 16)
    criterion(D, mode="naive").generator_step(prediction, image, hole)
    with torch.no_grad():
        ref(SF.composite(prediction, image, hole))
    assert any(not torch.equal(v, ref.state_dict()[k]) for k, v in D.state_dict().items())


def test_freeze_restores_requires_grad_after_an_exception() -> None:
    D, S, out = make_nets("unet+seg")
    fixed = D.global_head.parametrizations.weight.original  # type: ignore[union-attr]
    fixed.requires_grad_(False)  # a parameter the user froze stays frozen
    before = {id(p): p.requires_grad for net in (D, S) for p in net.parameters()}  # type: ignore[union-attr]
    crit = criterion(D, S, **out)
    prediction, image, hole = make_batch(2, 20, 20)  # 20 is not divisible by 2**depth: D's forward raises
    with record_calls(D) as calls, pytest.raises(ValueError, match="divisible"):
        crit.generator_step(prediction, image, hole)
    assert calls and calls[0].frozen, "the exception was raised inside the frozen forward"
    after = {id(p): p.requires_grad for net in (D, S) for p in net.parameters()}  # type: ignore[union-attr]
    assert after == before and not fixed.requires_grad


@pytest.mark.parametrize("layout", ["twohead", "unet+seg"])
def test_freeze_keeps_discriminator_grads_empty(layout: str) -> None:
    D, S, out = make_nets(layout)
    nets = [n for n in (D, S) if n is not None]
    batch = make_batch(2, 16, 16)
    frozen = criterion(D, S, negatives=2, mask_sampler=seeded_sampler(16, 16), **out)
    _, grad_frozen, _ = run_step(frozen, *batch)
    assert all(p.grad is None for n in nets for p in n.parameters())
    assert all(p.requires_grad for n in nets for p in n.parameters())

    free = criterion(D, S, negatives=2, mask_sampler=seeded_sampler(16, 16), freeze_discriminator=False, **out)
    _, grad_free, _ = run_step(free, *batch)
    for n in nets:
        grads = [p.grad for p in n.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert rel(grad_frozen, grad_free) <= TOL, "freezing D must not change the generator's gradient"


# --------------------------------------------------------------------------------------------------
# discriminator step, term subsets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hinge", "bce"])
@pytest.mark.parametrize("layout", ["twohead", "simple+seg"])
def test_discriminator_step_equals_functional_losses(layout: str, kind: str) -> None:
    D, S, out = make_nets(layout)
    crit = criterion(D, S, objective=InpaintingObjective(kind=kind), **out)
    prediction, image, hole = make_batch(3, 16, 16)
    prediction.requires_grad_(True)
    terms = crit.discriminator_step(prediction, image, hole)
    comp = SF.composite(prediction.detach(), image, hole)
    fake, real = D(comp), D(image)
    if S is None:
        (g_fake, p_fake), (g_real, p_real) = fake, real
    else:
        g_fake, g_real, p_fake, p_real = fake, real, S(comp), S(image)
    adv = SF.adversarial_discriminator_loss(g_fake, g_real, kind=kind)  # type: ignore[arg-type]
    scat = SF.scat_segmenter_loss(p_fake, p_real, hole, kind=kind)  # type: ignore[arg-type]
    assert set(terms) == {"adv", "scat", "total"}
    torch.testing.assert_close(terms["adv"], adv)
    torch.testing.assert_close(terms["scat"], scat)
    torch.testing.assert_close(terms["total"], adv + scat)
    terms["total"].backward()
    assert prediction.grad is None, "the discriminator step must not reach the generator"
    assert all(p.grad is not None for p in D.parameters())


def test_adv_rec_baseline_computes_only_those_terms() -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D, terms=("adv", "rec"))
    assert crit.terms == ("adv", "rec")
    prediction, image, hole = make_batch(3, 16, 16)
    with record_calls(D) as calls:
        terms = crit.generator_step(prediction, image, hole)
    assert [(c.name, c.grad, c.batch) for c in calls if c.name == "D"] == [("D", True, 3)], "no feature passes"
    adv = SF.adversarial_generator_loss(D(SF.composite(prediction, image, hole))[0])
    rec = SF.reconstruction_loss(prediction, image)
    assert set(terms) == {"adv", "rec", "total"}
    torch.testing.assert_close(terms["adv"], adv)
    torch.testing.assert_close(terms["total"], adv + 10 * rec)
    d_terms = crit.discriminator_step(prediction, image, hole)
    assert set(d_terms) == {"adv", "total"}


@pytest.mark.parametrize(
    ("terms", "d_calls", "keys"),
    [
        (("rec",), 0, {"rec"}),
        (("adv", "scat"), 1, {"adv", "scat", "rec"}),  # "rec" is always computed
        (("scat", "text"), 4, {"scat", "text", "rec"}),  # x-, x, x~ (+ no negatives without "sem")
    ],
)
def test_term_subsets_do_only_their_work(terms: tuple[str, ...], d_calls: int, keys: set[str]) -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D, terms=terms, chunk_size=2)
    with record_calls(D) as calls:
        out = crit.generator_step(*make_batch(3, 16, 16))
    assert set(out) == keys | {"total"}
    # chunk_size 2 splits x and x~ (3 images each) into two passes
    assert len([c for c in calls if c.name == "D"]) == (1 + 2 * 2 if "text" in terms else d_calls)


def test_forward_is_generator_step() -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D)
    batch = make_batch(2, 16, 16)
    a, b = crit(*batch), crit.generator_step(*batch)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


class TupleD(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(dim=(1, 2, 3))[:, None], x[:, :1]


CONSTRUCTOR_ERRORS = {
    "missing-textural-layer": ({"textural_layers": ["encoder.9"]}, ValueError, r"lacks a layer.*'encoder\.9'"),
    "missing-semantic-layer": ({"semantic_layer": "global_head:inptu"}, ValueError, r"global_head:inptu"),
    "unknown-term": ({"terms": ("adv", "bogus")}, ValueError, r"unknown \['bogus'\]"),
    "unconfigured-term": (
        {"textural_layers": (), "terms": ("adv", "text")},
        ValueError,
        r"\['text'\] requested but .* not configured",
    ),
    "negatives-zero": ({"negatives": 0}, ValueError, r"negatives: expected 'batch' or an int M >= 1, got 0"),
    "negatives-negative": ({"negatives": -2}, ValueError, r"negatives: .* got -2"),
    "negatives-string": ({"negatives": "all"}, ValueError, r"negatives: .* got 'all'"),
    "negatives-bool": ({"negatives": True}, ValueError, r"negatives: .* got True"),
    "chunk-size-zero": ({"chunk_size": 0}, ValueError, r"chunk_size: expected an int >= 1, got 0"),
    "mode": ({"mode": "slow"}, ValueError, r"mode: expected one of 'fast', 'naive', got 'slow'"),
    "pool": ({"semantic_pool": "max"}, ValueError, r"semantic_pool: expected one of"),
    "textural-str": ({"textural_layers": "encoder.0"}, TypeError, r"textural_layers: .* str"),
    "objective": ({"objective": nn.L1Loss()}, TypeError, r"objective: expected an InpaintingObjective"),
}


@pytest.mark.parametrize(("kwargs", "error", "match"), list(CONSTRUCTOR_ERRORS.values()), ids=list(CONSTRUCTOR_ERRORS))
def test_bad_configuration_raises(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    D = small_d()
    with pytest.raises(error, match=match):
        criterion(D, **kwargs)


def test_non_module_networks_raise() -> None:
    with pytest.raises(TypeError, match="discriminator: expected a torch.nn.Module"):
        SCATCriterion(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="segmenter: expected a torch.nn.Module or None"):
        SCATCriterion(small_d(), segmenter="S")  # type: ignore[arg-type]


def _shrink_w(t: torch.Tensor) -> torch.Tensor:
    return t[..., :-8]


STEP_ERRORS = {
    "hole-size": (lambda p, i, h: (p, i, _shrink_w(h)), r"hole: expected the spatial size of image \(16, 16\)"),
    "hole-batch": (lambda p, i, h: (p, i, h[:2]), r"hole: expected batch size 3 .* got 2"),
    "prediction-batch": (lambda p, i, h: (p[:2], i, h), r"prediction: expected the shape of image"),
    "prediction-size": (lambda p, i, h: (_shrink_w(p), i, h), r"prediction: expected the shape of image"),
    "hole-channels": (lambda p, i, h: (p, i, h.expand(-1, 3, -1, -1)), r"hole: expected shape \(B, 1, H, W\)"),
    "hole-range": (lambda p, i, h: (p, i, h * 2), r"hole: expected values in \[0, 1\]"),
    "image-int": (lambda p, i, h: (p, i.long(), h), r"image: expected a floating-point tensor"),
    "image-3d": (lambda p, i, h: (p[0], i[0], h), r"prediction: expected a 4-D tensor"),
}


@pytest.mark.parametrize("step", ["generator_step", "discriminator_step"])
@pytest.mark.parametrize(("change", "match"), list(STEP_ERRORS.values()), ids=list(STEP_ERRORS))
def test_bad_step_input_raises(change: Any, match: str, step: str) -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D)
    with pytest.raises((ValueError, TypeError), match=match):
        getattr(crit, step)(*change(*make_batch(3, 16, 16)))


def test_missing_output_head_raises() -> None:
    crit = SCATCriterion(TupleD(), pixel_output=5)
    with pytest.raises(ValueError, match=r"pixel_output: expected index or key 5"):
        crit.generator_step(*make_batch(2, 8, 8))


def test_single_tensor_output_is_not_reused_as_pixel_logits() -> None:
    """A one-head D's tensor is the global logit; SCAT needs pixel_output=None, a segmenter or global_output=None."""
    D, batch = SimpleD().to(F64), make_batch(2, 16, 16)
    for step in ("generator_step", "discriminator_step"):
        with pytest.raises(ValueError, match=r"pixel_output: .* got a single tensor of shape \(2, 1\)"):
            getattr(SCATCriterion(D), step)(*batch)
    assert set(SCATCriterion(D, pixel_output=None).generator_step(*batch)) == {"adv", "rec", "total"}
    # a per-pixel-only network: its tensor is the SCAT map
    S = small_s().to(F64)
    crit = SCATCriterion(S, global_output=None, pixel_output=0)
    terms = crit.generator_step(*batch)
    assert set(terms) == {"scat", "rec", "total"}
    torch.testing.assert_close(terms["scat"], SF.scat_generator_loss(S(SF.composite(*batch)), batch[2]))


def test_mask_sampler_of_wrong_size_raises() -> None:
    D, _, _ = make_nets("twohead")
    crit = criterion(D, negatives=2, mask_sampler=lambda n, h, w: torch.zeros(n, 1, h, w + 8))
    with pytest.raises(ValueError, match=r"mask_sampler\(\.\.\.\): expected masks of size \(16, 16\)"):
        crit.generator_step(*make_batch(2, 16, 16))


def test_discriminator_step_without_adversarial_terms_raises() -> None:
    crit = criterion(small_d().to(F64), terms=("rec",))
    with pytest.raises(ValueError, match="neither 'adv' nor 'scat'"):
        crit.discriminator_step(*make_batch(2, 16, 16))


# --------------------------------------------------------------------------------------------------
# degenerate masks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "naive"])
@pytest.mark.parametrize("fill", [0.0, 1.0], ids=["hole-free", "all-hole"])
@pytest.mark.parametrize("negatives", ["batch", 2], ids=["batch", "M2"])
def test_hole_free_and_all_hole_masks_give_finite_terms_and_grads(fill: float, mode: str, negatives: Any) -> None:
    D, _, _ = make_nets("twohead")
    sampler = (lambda n, h, w: torch.full((n, 1, h, w), fill)) if negatives != "batch" else None
    crit = criterion(
        D,
        mode=mode,
        negatives=negatives,
        mask_sampler=sampler,
        objective=InpaintingObjective(in_features=D.feature_dim, hidden_features=8, out_features=8),
    ).to(F64)
    prediction, image, _ = make_batch(2, 16, 16)
    hole = torch.full((2, 1, 16, 16), fill, dtype=F64)
    terms, grad, head = run_step(crit, prediction, image, hole)
    assert all(torch.isfinite(v).all() for v in terms.values()), terms
    assert grad is not None and torch.isfinite(grad).all()
    assert all(g is not None and torch.isfinite(g).all() for g in head)
    d_terms = crit.discriminator_step(prediction, image, hole)
    assert all(torch.isfinite(v).all() for v in d_terms.values())


# --------------------------------------------------------------------------------------------------
# the benchmark still runs
# --------------------------------------------------------------------------------------------------


def _load_bench() -> Any:
    path = ROOT / "benchmarks" / "bench_step.py"
    spec = importlib.util.spec_from_file_location("bench_step_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_step_smoke(tmp_path: Path) -> None:
    """bench_step's core on tiny networks: every variant runs, the gradient check passes, the report renders."""
    bench = _load_bench()
    cfg = bench.Config(
        size=16,
        batch=2,
        base_channels=4,
        num_blocks=1,
        d_base_channels=4,
        d_depth=3,
        repeats=1,
        warmup=0,
        memory=("tensors",),
        breakdown=True,
    )
    result = bench.run(cfg, log=lambda *a: None)
    assert set(result["variants"]) == {"plain", "fast", "naive"}
    assert result["grad_check"]["grad_rel_diff"] <= 1e-4 and result["grad_check"]["head_grad_nonzero"]
    for row in result["variants"].values():
        assert row["g_time"] > 0 and row["d_time"] > 0 and row["g_mem"] > 0
    body, csv_rows = bench.report(result, "python benchmarks/bench_step.py --quick")
    assert "bench_step on cpu" in body and len(csv_rows) == 3
    assert "Where one generator step's time goes" in body
    assert result["breakdown"]["fast"]["feature passes: x, x~, negatives"] > 0
    assert result["breakdown"]["plain"]["feature passes: x, x~, negatives"] == 0

    common = sys.modules["_common"]
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\n<!-- other start -->\nkeep me\n<!-- other end -->\n")
    common.write_section("bench_step:cpu", body, md)
    common.write_section("bench_step:cpu", "second", md)  # replaced, not appended
    text = md.read_text()
    assert "keep me" in text and text.count("<!-- bench_step:cpu start -->") == 1 and "second" in text
    assert common.write_csv(tmp_path / "r.csv", csv_rows).read_text().startswith("variant,")
