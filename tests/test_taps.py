"""Tests for scatloss.taps.FeatureTap: features of any network by layer name."""

from __future__ import annotations

import doctest
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrizations

import scatloss.taps as taps_module
from scatloss.taps import FeatureTap

# --------------------------------------------------------------------------------------------------
# Tiny networks
# --------------------------------------------------------------------------------------------------

SpectralNorm = Callable[[nn.Module], nn.Module]
SPECTRAL_NORMS: dict[str, SpectralNorm] = {
    "utils.spectral_norm": nn.utils.spectral_norm,
    "parametrizations.spectral_norm": parametrizations.spectral_norm,
}


class TinyUNetD(nn.Module):
    """A miniature of the released two-headed U-Net discriminator.

    ``enc.i`` = conv (+ BatchNorm) + LeakyReLU blocks; the global head sums ``relu(bottleneck)`` over
    H, W and feeds a Linear (so the pooled vector exists only as ``head:input``); the decoder
    upsamples the bottleneck to a per-pixel logit map. Returns ``(global_logit (B, 1), map (B, 1, H, W))``.
    """

    def __init__(self, sn: SpectralNorm | None = None, batchnorm: bool = False, inplace: bool = True) -> None:
        super().__init__()

        def wrap(m: nn.Module) -> nn.Module:
            return sn(m) if sn is not None else m

        norm: list[nn.Module] = [nn.BatchNorm2d(8)] if batchnorm else []
        self.enc = nn.Sequential(
            nn.Sequential(wrap(nn.Conv2d(3, 4, 3, 2, 1)), nn.LeakyReLU(0.2, inplace=inplace)),
            nn.Sequential(wrap(nn.Conv2d(4, 8, 3, 2, 1)), *norm, nn.LeakyReLU(0.2, inplace=inplace)),
        )
        self.head = wrap(nn.Linear(8, 1))
        self.dec = nn.Sequential(nn.Upsample(scale_factor=4), wrap(nn.Conv2d(8, 1, 3, 1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.head(torch.relu(h).sum(dim=(2, 3))), self.dec(h)


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor, *, scale: float = 1.0) -> dict[str, torch.Tensor]:
        h = self.body(x) * scale
        return {"map": h, "logit": self.pool(h).flatten(1)}


class Branchy(nn.Module):
    """Runs ``extra`` only when asked; ``unused`` never runs; ``shared`` runs twice if ``twice``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1)
        self.extra = nn.Conv2d(2, 2, 1)
        self.unused = nn.Conv2d(2, 2, 1)
        self.shared = nn.Tanh()

    def forward(self, x: torch.Tensor, use_extra: bool = False, twice: bool = False, fail: bool = False) -> Any:
        h = self.shared(self.stem(x))
        if use_extra:
            h = self.extra(h)
        if twice:
            h = self.shared(h)
        if fail:
            raise ValueError("forward failed on purpose")
        return h


class Boom(nn.Module):
    """A layer that must never run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("Boom ran: the forward was not stopped early")


def image(batch: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def net(seed: int = 0, **kwargs: Any) -> TinyUNetD:
    torch.manual_seed(seed)
    return TinyUNetD(**kwargs)


def hooks_left(module: nn.Module) -> int:
    """Number of forward (pre-)hooks on ``module`` and all of its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def by_hand(D: TinyUNetD, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference features of TinyUNetD (built with inplace=False), computed without any hook."""
    conv0 = D.enc[0][0](x)
    act0 = D.enc[0][1](conv0)
    act1 = D.enc[1](act0)
    return {"enc.0.0": conv0, "enc.0": act0, "enc.1": act1, "head:input": torch.relu(act1).sum(dim=(2, 3))}


# --------------------------------------------------------------------------------------------------
# Output and features
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "layers", "kwargs"),
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 1, 3)), ["1"], {}),
        (lambda: net(inplace=False), ["enc.1", "head:input"], {}),
        (DictOut, ["body", "pool:input"], {"scale": 2.0}),
    ],
    ids=["tensor", "tuple", "dict"],
)
def test_output_is_identical_to_plain_forward(make: Callable[[], nn.Module], layers: list[str], kwargs: Any) -> None:
    module = make().eval()
    x = image()
    expected = module(x, **kwargs)
    output, _ = FeatureTap(module, layers)(x, **kwargs)
    assert type(output) is type(expected)
    flat_out, spec_out = torch.utils._pytree.tree_flatten(output)
    flat_exp, spec_exp = torch.utils._pytree.tree_flatten(expected)
    assert spec_out == spec_exp
    assert all(torch.equal(a, b) for a, b in zip(flat_out, flat_exp, strict=True))


def test_features_equal_layer_outputs_computed_by_hand() -> None:
    D = net(inplace=False)
    x = image()
    reference = by_hand(D, x)
    _, features = FeatureTap(D, list(reference))(x)
    for name, value in reference.items():
        assert torch.equal(features[name], value), name


def test_features_follow_requested_order() -> None:
    layers = ["head:input", "enc.0", "dec.1", "enc.1"]
    _, features = FeatureTap(net(), layers)(image())
    assert list(features) == layers


def test_input_suffix_captures_first_positional_input() -> None:
    D = net(inplace=False)
    x = image()
    _, features = FeatureTap(D, ["head:input", "enc:input", "head"])(x)
    assert torch.equal(features["enc:input"], x)
    assert features["head:input"].shape == (2, 8)
    assert torch.equal(features["head:input"], by_hand(D, x)["head:input"])
    assert torch.equal(features["head"], D.head(features["head:input"]))


def test_nested_and_sequential_names_resolve() -> None:
    D = net(inplace=False)
    x = image()
    _, features = FeatureTap(D, ["enc.1.0", "enc", "dec.0", ""])(x)
    assert torch.equal(features["enc.1.0"], D.enc[1][0](D.enc[0](x)))
    assert torch.equal(features["enc"], D.enc(x))
    assert torch.equal(features["dec.0"], nn.functional.interpolate(D.enc(x), scale_factor=4))
    assert all(torch.equal(a, b) for a, b in zip(features[""], D(x), strict=True))


def test_features_keep_the_autograd_graph_and_grad_mode_is_untouched() -> None:
    D = net(inplace=False)
    tap = FeatureTap(D, ["enc.1"])
    _, features = tap(image())
    assert features["enc.1"].requires_grad
    features["enc.1"].sum().backward()
    assert D.enc[0][0].weight.grad is not None
    with torch.no_grad():
        _, features = tap(image())
        assert not torch.is_grad_enabled()
    assert not features["enc.1"].requires_grad
    assert torch.is_grad_enabled()


# --------------------------------------------------------------------------------------------------
# Wrappers and spectral norm
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_wrapped_module_uses_inner_names_and_survives_early_exit(tmp_path: Any) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        D = net(inplace=False)
        ddp = nn.parallel.DistributedDataParallel(D)
        x = image()
        layers = ["enc.0", "head:input"]
        with torch.no_grad():
            output, features = FeatureTap(ddp, layers)(x)
            plain_output, plain_features = FeatureTap(D, layers)(x)
        assert all(torch.equal(a, b) for a, b in zip(output, plain_output, strict=True))
        assert all(torch.equal(features[n], plain_features[n]) for n in layers)
        # Early exit inside DDP's forward, with autograd on, must leave DDP usable for training steps.
        for _ in range(2):
            shallow = FeatureTap(ddp, ["enc.0"]).features(x)
            shallow["enc.0"].sum().backward()
            D.zero_grad()
            logit, pixel_map = ddp(x)
            (logit.sum() + pixel_map.sum()).backward()
            assert all(p.grad is not None for p in D.parameters())
        assert hooks_left(D) == 0
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("flavour", list(SPECTRAL_NORMS))
def test_spectral_norm_flavours_keep_layer_names(flavour: str) -> None:
    D = net(sn=SPECTRAL_NORMS[flavour], inplace=False).eval()
    x = image()
    names = dict(D.named_modules())
    if flavour.startswith("parametrizations"):
        assert "enc.0.0.parametrizations.weight.0" in names  # parametrize adds submodules
    reference = by_hand(D, x)
    _, features = FeatureTap(D, list(reference))(x)
    for name, value in reference.items():
        assert torch.equal(features[name], value), name


def test_parametrization_submodule_can_be_tapped() -> None:
    D = net(sn=parametrizations.spectral_norm, inplace=False).eval()
    _, features = FeatureTap(D, ["enc.0.0.parametrizations.weight.0"])(image())
    assert torch.equal(features["enc.0.0.parametrizations.weight.0"], D.enc[0][0].weight)


def test_compiled_module_is_refused_and_compiling_the_tap_gives_correct_features() -> None:
    D = net(inplace=False).eval()
    layers = ["enc.0", "head:input"]
    with pytest.raises(TypeError, match=r"module: expected an eager module.*torch\.compile\(FeatureTap\("):
        FeatureTap(torch.compile(D), layers)
    # The reason for refusing: a graph compiled without hooks ignores hooks added afterwards.
    compiled_d = torch.compile(D, backend="eager")
    compiled_d(image())
    seen: list[torch.Tensor] = []
    handle = D.enc[0].register_forward_hook(lambda m, a, o: seen.append(o))
    try:
        compiled_d(image())
    finally:
        handle.remove()
    assert seen == []
    # The fix named by the error: compile the tap.
    tap = FeatureTap(D, layers)
    compiled_tap = torch.compile(tap)
    try:
        for seed in (1, 2):  # the second call reuses the compiled code with fresh hooks
            x = image(seed=seed)
            output, features = compiled_tap(x)
            expected = by_hand(D, x)
            for name in layers:
                torch.testing.assert_close(features[name], expected[name])
            torch.testing.assert_close(output, D(x))
            assert hooks_left(D) == 0
    finally:
        torch._dynamo.reset()


# --------------------------------------------------------------------------------------------------
# Lifetime of hooks
# --------------------------------------------------------------------------------------------------


def test_hooks_exist_only_during_a_call() -> None:
    D = net()
    during: list[int] = []
    D.dec.register_forward_pre_hook(lambda m, a: during.append(hooks_left(D)))  # the spy itself counts 1
    tap = FeatureTap(D, ["enc.0", "head:input"])
    assert hooks_left(D) == 1
    tap(image())
    assert during == [3]
    assert hooks_left(D) == 1


def test_context_manager_closes_the_tap() -> None:
    D = net()
    with FeatureTap(D, ["enc.1"]) as tap:
        _, features = tap(image())
    assert tap.closed
    assert hooks_left(D) == 0
    with pytest.raises(RuntimeError, match="closed"):
        tap(image())


def test_close_makes_later_calls_raise() -> None:
    tap = FeatureTap(net(), ["enc.1"])
    tap.close()
    tap.close()  # idempotent
    with pytest.raises(RuntimeError, match="FeatureTap: this tap is closed"):
        tap.features(image())
    with pytest.raises(RuntimeError, match="closed"), tap:
        pass


def test_no_hook_survives_an_exception_in_the_forward_or_the_with_body() -> None:
    module = Branchy()
    tap = FeatureTap(module, ["stem"])
    with pytest.raises(ValueError, match="forward failed on purpose"):
        tap(image(), fail=True)
    assert hooks_left(module) == 0
    with pytest.raises(KeyError), FeatureTap(module, ["stem"]) as other:
        other(image())
        raise KeyError("body failed")
    assert other.closed
    assert hooks_left(module) == 0


def test_no_hook_survives_garbage_collection_of_the_tap() -> None:
    D = net()
    tap = FeatureTap(D, ["enc.1", "head:input"])
    tap(image())
    ref = weakref.ref(tap)
    del tap
    gc.collect()
    assert ref() is None
    assert hooks_left(D) == 0


def test_features_of_one_call_do_not_leak_into_the_next() -> None:
    module = Branchy()
    tap = FeatureTap(module, ["extra"])
    x1, x2 = image(seed=1), image(seed=2)
    _, first = tap(x1, use_extra=True)
    _, second = tap(x2, use_extra=True)
    assert first is not second
    assert torch.equal(second["extra"], module(x2, use_extra=True))
    assert not torch.equal(first["extra"], second["extra"])
    with pytest.raises(RuntimeError, match="'extra' did not run"):
        tap(x1, use_extra=False)  # a stale 'extra' from the previous call must not be returned


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "pattern"),
    [
        ("enc.O.0", r"unknown layer 'enc\.O\.0'; close matches: .*'enc\.0\.0'"),
        ("haed:input", r"unknown layer 'haed:input'; close matches: 'head'"),
        ("discriminator", r"unknown layer 'discriminator'; no close match; names include: 'enc'"),
    ],
)
def test_unknown_name_raises_with_close_matches(layer: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=r"layers: expected names from named_modules\(\) of TinyUNetD.*" + pattern):
        FeatureTap(net(), ["enc.0", layer])


@pytest.mark.parametrize(
    ("module", "layers", "options", "error", "pattern"),
    [
        ("not a module", ["x"], {}, TypeError, r"module: expected a torch\.nn\.Module, got str"),
        (None, "enc.0", {}, TypeError, r"layers: expected a sequence.*wrap a single name in a list: \['enc\.0'\]"),
        (None, ["enc.0", 3], {}, TypeError, r"layers: expected every layer name to be a str, got int 3"),
        (None, [], {}, ValueError, r"layers: expected at least one layer name"),
        (None, ["enc.0", "enc.0"], {}, ValueError, r"layers: expected distinct names, got duplicates \['enc\.0'\]"),
        (None, ["enc.0"], {"clone": 1}, TypeError, r"clone: expected a bool, got int 1"),
        (None, ["enc.0"], {"early_exit": "yes"}, TypeError, r"early_exit: expected a bool, got str 'yes'"),
        (None, ["enc.0"], {"preserve_buffers": None}, TypeError, r"preserve_buffers: expected a bool, got NoneType"),
    ],
)
def test_bad_arguments_raise_errors_naming_the_argument(
    module: Any, layers: Any, options: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        FeatureTap(net() if module is None else module, layers, **options)


def test_layer_that_did_not_run_is_named() -> None:
    module = Branchy()
    with pytest.raises(RuntimeError, match=r"layer\(s\) 'unused', 'extra' did not run during the forward"):
        FeatureTap(module, ["stem", "unused", "extra"])(image())
    assert hooks_left(module) == 0


def test_layer_that_runs_twice_is_refused() -> None:
    module = Branchy()
    tap = FeatureTap(module, ["shared"])
    tap(image())  # once: fine
    with pytest.raises(RuntimeError, match="layer 'shared' ran more than once"):
        tap(image(), twice=True)
    assert hooks_left(module) == 0


# --------------------------------------------------------------------------------------------------
# In-place operations
# --------------------------------------------------------------------------------------------------


def test_in_place_modification_of_a_tapped_output_is_reported() -> None:
    D = net(inplace=True)
    pattern = (
        r"'enc\.0\.0' \(the output of layer 'enc\.0\.0'\) was modified in place.*'enc\.0\.1', 'enc\.1\.1'"
        r".*tap the activation that follows instead.*inplace=False.*clone=True"
    )
    with pytest.raises(RuntimeError, match=pattern):
        FeatureTap(D, ["enc.0.0"])(image())
    assert hooks_left(D) == 0


def test_output_of_the_in_place_activation_itself_can_be_tapped() -> None:
    D = net(inplace=True)
    x = image()
    _, features = FeatureTap(D, ["enc.0.1", "enc.1"])(x)
    reference = by_hand(net(inplace=False), x)
    assert torch.equal(features["enc.0.1"], reference["enc.0"])
    assert torch.equal(features["enc.1"], reference["enc.1"])


def test_input_of_an_in_place_layer_is_reported() -> None:
    with pytest.raises(RuntimeError, match=r"'enc\.0\.1:input' \(the input of layer 'enc\.0\.1'\) was modified in"):
        FeatureTap(net(inplace=True), ["enc.0.1:input"])(image())


def test_clone_makes_in_place_modification_harmless() -> None:
    D = net(inplace=True)
    x = image()
    _, features = FeatureTap(D, ["enc.0.0", "enc.0.1:input", "enc.0.1"], clone=True)(x)
    pre_activation = by_hand(net(inplace=False), x)["enc.0.0"]
    assert (pre_activation < 0).any()  # so the in-place LeakyReLU really changes it
    assert torch.equal(features["enc.0.0"], pre_activation)
    assert torch.equal(features["enc.0.1:input"], pre_activation)
    assert torch.equal(features["enc.0.1"], nn.functional.leaky_relu(pre_activation, 0.2))
    features["enc.0.0"].sum().backward()  # the clone is differentiable
    assert D.enc[0][0].weight.grad is not None


def test_inference_mode_captures_are_cloned_because_they_have_no_version_counter() -> None:
    x = image()
    with torch.inference_mode():
        _, features = FeatureTap(net(inplace=True), ["enc.0.0"])(x)
    assert torch.equal(features["enc.0.0"], by_hand(net(inplace=False), x)["enc.0.0"].detach())


# --------------------------------------------------------------------------------------------------
# Early exit
# --------------------------------------------------------------------------------------------------


def test_early_exit_skips_every_later_module() -> None:
    D = net()
    D.dec = nn.Sequential(Boom())  # the decoder must never run
    ran: list[str] = []
    D.head.register_forward_hook(lambda m, a, o: ran.append("head"))
    tap = FeatureTap(D, ["enc.1", "enc.0"], early_exit=True)
    output, features = tap(image())
    assert output is None
    assert list(features) == ["enc.1", "enc.0"]
    assert ran == []
    assert tap.features(image())["enc.1"].shape == (2, 8, 2, 2)
    assert ran == []
    assert hooks_left(D) == 1  # only the counter


def test_early_exit_on_an_input_capture_stops_before_that_layer_runs() -> None:
    D = net()
    D.dec = nn.Sequential(Boom())
    D.head = nn.Sequential(Boom())
    features = FeatureTap(D, ["head:input"]).features(image())
    assert features["head:input"].shape == (2, 8)


def test_early_exit_features_equal_full_forward_features() -> None:
    D = net(inplace=False)
    x = image()
    tap = FeatureTap(D, ["enc.0", "head:input"])
    _, full = tap(x)
    shallow = tap.features(x)
    assert all(torch.equal(full[n], shallow[n]) for n in tap.layers)


def test_early_exit_exception_never_escapes_even_past_except_exception() -> None:
    class Swallowing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Conv2d(3, 2, 1)
            self.after = Boom()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                h = self.inner(x)
            except Exception:  # a user's broad handler must not swallow the early exit
                h = torch.zeros(1)
            return self.after(h)

    module = Swallowing()
    features = FeatureTap(module, ["inner"]).features(image())
    assert torch.equal(features["inner"], module.inner(image()))


# --------------------------------------------------------------------------------------------------
# Buffers
# --------------------------------------------------------------------------------------------------


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: nn.Module) -> list[str]:
    after = module.state_dict()
    assert list(after) == list(before)
    return [k for k in before if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("flavour", list(SPECTRAL_NORMS))
def test_preserve_buffers_keeps_state_dict_bit_identical(flavour: str) -> None:
    D = net(sn=SPECTRAL_NORMS[flavour], batchnorm=True).train()
    before = _state(D)
    tap = FeatureTap(D, ["enc.1", "head:input"], preserve_buffers=True)
    output, features = tap(image())
    (output[0].sum() + features["enc.1"].sum()).backward()  # autograd still works after the restore
    tap.features(image())
    assert _changed(before, D) == []

    def fail(module: nn.Module, args: Any, output: Any) -> None:
        raise ValueError("head failed on purpose")

    D.head.register_forward_hook(fail)  # runs after every buffer has been updated
    with pytest.raises(ValueError, match="head failed on purpose"):
        tap(image())
    assert _changed(before, D) == []


@pytest.mark.parametrize("flavour", list(SPECTRAL_NORMS))
def test_without_preserve_buffers_extraction_changes_the_state(flavour: str) -> None:
    D = net(sn=SPECTRAL_NORMS[flavour], batchnorm=True).train()
    before = _state(D)
    FeatureTap(D, ["enc.1"])(image())
    changed = _changed(before, D)
    assert "enc.1.1.running_mean" in changed
    assert "enc.1.1.num_batches_tracked" in changed
    u = "enc.0.0.weight_u" if flavour.startswith("utils") else "enc.0.0.parametrizations.weight.0._u"
    assert u in changed


@pytest.mark.parametrize("flavour", list(SPECTRAL_NORMS))
def test_preserve_buffers_gives_the_outputs_and_gradients_of_a_plain_forward(flavour: str) -> None:
    plain = net(sn=SPECTRAL_NORMS[flavour], batchnorm=True).train()
    tapped = net(sn=SPECTRAL_NORMS[flavour], batchnorm=True).train()
    tapped.load_state_dict(plain.state_dict())
    x = image()
    expected = plain(x)
    (expected[0].sum() + expected[1].sum()).backward()
    output, _ = FeatureTap(tapped, ["enc.1"], preserve_buffers=True)(x)
    (output[0].sum() + output[1].sum()).backward()
    assert all(torch.equal(a, b) for a, b in zip(output, expected, strict=True))
    for (name, p), q in zip(plain.named_parameters(), tapped.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_preserve_buffers_leaves_an_eval_mode_graph_differentiable() -> None:
    # In eval mode torch.nn.utils.spectral_norm and BatchNorm save buffers for backward: writing them back
    # in place (even unchanged) would bump their version counters and break backward.
    D = net(sn=nn.utils.spectral_norm, batchnorm=True).eval()
    output, _ = FeatureTap(D, ["enc.1"], preserve_buffers=True)(image())
    output[0].sum().backward()
    assert D.enc[0][0].weight_orig.grad is not None


# --------------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------------


def test_docstring_examples_run() -> None:
    result = doctest.testmod(taps_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_repr_names_the_module_layers_and_options() -> None:
    tap = FeatureTap(net(), ["enc.0"], clone=True)
    assert repr(tap) == "FeatureTap(TinyUNetD, layers=['enc.0'], clone=True)"
    tap.close()
    assert repr(tap) == "FeatureTap(closed, layers=['enc.0'], clone=True)"


# --------------------------------------------------------------------------------------------------
# Exact messages and concurrency details (each pins mutants a looser test let through)
# --------------------------------------------------------------------------------------------------


class Wide(nn.Module):
    """``n`` named children ``<prefix>0 .. <prefix>{n-1}``, run in order."""

    def __init__(self, n: int, prefix: str = "block") -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"{prefix}{i}", nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = child(x)
        return x


def _unknown_message(module: nn.Module, name: str) -> str:
    with pytest.raises(ValueError) as info:
        FeatureTap(module, [name])
    return str(info.value)


def test_unknown_layer_message_lists_at_most_five_close_matches_above_half_similarity() -> None:
    head = "layers: expected names from named_modules() of Wide (optionally ending in ':input'), got unknown layer"
    # seven names match 'block' equally well; five are shown (difflib's order: best first, ties reversed)
    assert _unknown_message(Wide(7), "block") == (
        f"{head} 'block'; close matches: 'block6', 'block5', 'block4', 'block3', 'block2'"
    )
    # ratio('blk', 'block0') = 2*3/9 = 0.67 but ratio('bl', 'block0') = 0.5: a match at the cutoff of 0.5
    assert _unknown_message(Wide(1), "bl") == f"{head} 'bl'; close matches: 'block0'"
    assert _unknown_message(Wide(1), "bz") == f"{head} 'bz'; no close match; names include: 'block0'"
    # ':input' is not part of the name matched
    assert _unknown_message(Wide(1), "bloc:input") == f"{head} 'bloc:input'; close matches: 'block0'"


def test_unknown_layer_message_shows_twelve_names_then_an_ellipsis() -> None:
    head = "layers: expected names from named_modules() of Wide (optionally ending in ':input'), got unknown layer"
    names = ", ".join(f"'l{i}'" for i in range(12))
    assert _unknown_message(Wide(12, "l"), "zzzz") == f"{head} 'zzzz'; no close match; names include: {names}"
    assert _unknown_message(Wide(13, "l"), "zzzz") == f"{head} 'zzzz'; no close match; names include: {names}, ..."
    leaf = "layers: expected names from named_modules() of Identity (optionally ending in ':input'), got unknown layer"
    assert _unknown_message(nn.Identity(), "x") == f"{leaf} 'x'; it has no submodules"


class InplaceChain(nn.Module):
    """``c`` (a conv) followed by ``n_inplace`` in-place ReLUs: every ReLU rewrites ``c``'s output."""

    def __init__(self, n_inplace: int) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 1, 1)
        self.d = nn.Conv2d(1, 1, 1)
        self.acts = nn.Sequential(*[nn.ReLU(inplace=True) for _ in range(n_inplace)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        z = self.d(y)
        y.mul_(2.0)  # an in-place change that is not an inplace=True module
        return self.acts(z) if len(self.acts) else z


def test_in_place_message_names_every_affected_layer_and_at_most_six_inplace_modules() -> None:
    x = torch.ones(1, 1, 2, 2)
    with pytest.raises(RuntimeError) as info:
        FeatureTap(InplaceChain(7), ["c", "d", "d:input"])(x)  # captured in forward order: c, d:input, d
    message = str(info.value)
    first = message.split("; it no longer holds")[0]
    assert first == (
        "FeatureTap: the tensor captured as 'c' (the output of layer 'c') was modified in place later in the forward "
        "(version counter 0 -> 1), most likely by an in-place activation such as LeakyReLU(inplace=True) (modules "
        "with inplace=True here: " + ", ".join(f"'acts.{i}'" for i in range(6)) + ")"
    )
    assert message.endswith(
        "; it no longer holds the output of 'c' (also affected: 'd:input', 'd'). Fix: tap the activation that "
        "follows instead, build that activation with inplace=False, or pass clone=True to FeatureTap"
    )
    with pytest.raises(RuntimeError) as info:
        FeatureTap(InplaceChain(0), ["c"])(x)
    assert str(info.value) == (
        "FeatureTap: the tensor captured as 'c' (the output of layer 'c') was modified in place later in the forward "
        "(version counter 0 -> 1), most likely by an in-place activation such as LeakyReLU(inplace=True); it no "
        "longer holds the output of 'c'. Fix: tap the activation that follows instead, build that activation with "
        "inplace=False, or pass clone=True to FeatureTap"
    )


def test_repr_names_the_module_layers_and_the_options_that_are_on() -> None:
    net = Wide(2)
    assert repr(FeatureTap(net, ["block0"])) == "FeatureTap(Wide, layers=['block0'])"
    tap = FeatureTap(net, ["block0", "block1:input"], clone=True, early_exit=True)
    assert repr(tap) == "FeatureTap(Wide, layers=['block0', 'block1:input'], clone=True, early_exit=True)"
    tap.close()
    assert repr(tap) == "FeatureTap(closed, layers=['block0', 'block1:input'], clone=True, early_exit=True)"


class PairOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = _Pair()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair(x)[0]


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, None]:
        return x * 2, 3, None


def test_clone_copies_the_tensors_of_a_structured_output_and_keeps_other_leaves() -> None:
    x = torch.ones(2)
    features = FeatureTap(PairOut(), ["pair"], clone=True).features(x)
    value = features["pair"]
    assert value[1:] == (3, None)
    torch.testing.assert_close(value[0], x * 2)


class Gated(nn.Module):
    """``a`` -> (wait on ``gate`` if set) -> ``b``: a forward that can be held in the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)
        self.gate: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        return self.b(y)


def _held_call(call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``call`` in a thread whose forward waits at ``Gated.gate``; returns the thread and its outcome box."""
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            box["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def test_taps_of_different_modules_run_concurrently_and_another_threads_forward_is_not_captured() -> None:
    """Thread 1 is inside a tap call on ``m1`` (held between layers); meanwhile the main thread runs a tap call on
    another module ``m2`` (allowed: the claim is per module) and a plain forward of ``m1`` (its layers are not
    captured by thread 1's call: the input and output hooks ignore other threads)."""
    import threading

    torch.manual_seed(0)
    m1, m2 = Gated(), Gated()
    gate, reached = threading.Event(), threading.Event()

    class Signal:
        def wait(self, timeout: float) -> None:
            reached.set()
            gate.wait(timeout)

    m1.gate = Signal()
    x1, x2 = torch.randn(3, 2), torch.randn(3, 2)
    thread, box = _held_call(lambda: FeatureTap(m1, ["a", "b:input", "b"])(x1))
    try:
        assert reached.wait(30)
        out2, feats2 = FeatureTap(m2, ["a", "b:input"])(x2)  # another module: not blocked by thread 1's claim
        torch.testing.assert_close(feats2["a"], m2.a(x2))
        m1.gate = None
        x3 = torch.randn(3, 2) + 5.0
        m1(x3)  # a plain forward of m1 in this thread while thread 1's tap call is still open
        m1.gate = Signal()
    finally:
        gate.set()
        thread.join(30)
    assert "error" not in box, box.get("error")
    out1, feats1 = box["result"]
    torch.testing.assert_close(feats1["a"], m1.a(x1))
    torch.testing.assert_close(feats1["b:input"], m1.a(x1))
    torch.testing.assert_close(feats1["b"], m1.b(m1.a(x1)))
    torch.testing.assert_close(out1, feats1["b"])


def test_a_tap_call_nested_in_the_same_thread_on_the_same_module_runs() -> None:
    """Re-entry from the calling thread (a hook of the module running another tap of it, early exit before the
    outer call's layer) is not concurrency: both calls return their own features."""
    torch.manual_seed(0)
    net = Gated()
    inner_x = torch.randn(1, 2)
    got: dict[str, torch.Tensor] = {}
    entered: list[bool] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if not entered:
            entered.append(True)
            got.update(FeatureTap(net, ["a"]).features(inner_x))

    handle = net.a.register_forward_hook(hook)
    try:
        x = torch.randn(4, 2)
        _, outer = FeatureTap(net, ["b"])(x)
    finally:
        handle.remove()
    torch.testing.assert_close(got["a"], net.a(inner_x))
    torch.testing.assert_close(outer["b"], net.b(net.a(x)))


def test_layers_type_errors_give_the_list_hint_only_for_a_single_string() -> None:
    net = Wide(1)
    with pytest.raises(TypeError) as info:
        FeatureTap(net, "block0")  # type: ignore[arg-type]
    assert str(info.value).endswith("; wrap a single name in a list: ['block0']")
    with pytest.raises(TypeError) as info:
        FeatureTap(net, 5)  # type: ignore[arg-type]
    assert str(info.value) == "layers: expected a sequence of layer names (str), got int 5"


def test_a_module_registered_under_two_names_is_found_under_either() -> None:
    """``named_modules(remove_duplicate=False)``: the second name of a shared module is a valid layer name."""
    net = Wide(1)
    net.alias = net.block0  # the same Identity, registered again
    x = torch.randn(2)
    assert set(FeatureTap(net, ["alias"]).features(x)) == {"alias"}


def test_closed_is_a_bool() -> None:
    tap = FeatureTap(Wide(1), ["block0"])
    assert tap.closed is False
    tap.close()
    assert tap.closed is True


def test_unknown_layer_message_matches_the_name_without_its_input_suffix() -> None:
    net = Wide(1, prefix="inp")  # one child, "inp0"
    head = "layers: expected names from named_modules() of Wide (optionally ending in ':input'), got unknown layer"
    # 'x' is far from 'inp0'; 'x:inpu' (the name cut at the wrong end) would match it
    assert _unknown_message(net, "x:input") == f"{head} 'x:input'; no close match; names include: 'inp0'"
