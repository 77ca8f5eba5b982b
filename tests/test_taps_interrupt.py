"""FeatureTap under asynchronous exceptions and threads: no hook outlives a call, buffers come back, no leak.

An asynchronous ``KeyboardInterrupt`` (a signal handler raising) can arrive between any two bytecodes. Two
injections are used: ``sys.settrace`` with per-opcode events raises at the k-th opcode executed during a call
(deterministic, swept over the whole call, cleanup included), and a real ``SIGALRM`` timer whose handler raises
at a random moment. After every interrupted call the module must carry no hook, hold its original buffer
objects with their original values, and the next call must work.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time

import pytest
import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

from scatloss import taps
from scatloss.taps import FeatureTap


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.utils.parametrizations.spectral_norm(nn.Conv2d(2, 4, 3, padding=1)),
        nn.LeakyReLU(0.2),
        nn.BatchNorm2d(4),
        nn.utils.spectral_norm(nn.Conv2d(4, 4, 3, padding=1)),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 1, 3, padding=1),
    ).train()


def _hooks(module: nn.Module) -> int:
    """Forward hooks and pre-hooks on the module tree, less the pre-hook of ``nn.utils.spectral_norm`` (its own)."""
    own = sum(isinstance(h, SpectralNorm) for m in module.modules() for h in m._forward_pre_hooks.values())
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()) - own


def _buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_buffers())


def _assert_clean(module: nn.Module, before: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    assert _hooks(module) == 0, "a hook outlived the call"
    after = _buffers(module)
    assert after.keys() == before.keys()
    for name, buf in after.items():
        assert buf is before[name], f"buffer {name} was not put back"
        assert torch.equal(buf, values[name]), f"buffer {name} was advanced"
    assert id(module) not in taps._RUNNING, "the module claim outlived the call"
    assert torch.is_grad_enabled(), "grad mode was left switched off"


class _Interrupter:
    """A trace function raising ``KeyboardInterrupt`` at the given opcode counts of the traced call."""

    def __init__(self, at: set[int]) -> None:
        self.at = at
        self.count = 0
        self.raised = 0

    def __call__(self, frame, event, arg):  # noqa: ANN001 - sys.settrace protocol
        frame.f_trace_opcodes = True
        if event == "opcode":
            self.count += 1
            if self.count in self.at:
                self.raised += 1
                raise KeyboardInterrupt
        return self


def _traced_call(
    tap: FeatureTap, x: torch.Tensor, at: set[int], tracer_type: type[_Interrupter] = _Interrupter
) -> tuple[bool, int]:
    tracer = tracer_type(at)
    interrupted = False
    sys.settrace(tracer)
    try:
        tap.features(x)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        sys.settrace(None)
    return interrupted, tracer.count


@pytest.mark.parametrize("interrupts", [1, 2], ids=["one-interrupt", "two-interrupts"])
def test_an_interrupt_at_any_opcode_leaves_no_hook_and_restores_buffers(interrupts: int) -> None:
    net = _net()
    tap = FeatureTap(net, ["1", "4"], early_exit=True, preserve_buffers=True)
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        expected = tap.features(x)
    before = _buffers(net)
    values = {k: v.clone() for k, v in before.items()}
    _, total = _traced_call(tap, x, set())  # opcodes of one uninterrupted call
    assert total > 200
    rng = random.Random(interrupts)
    hits = 0
    for _ in range(150):
        first = rng.randrange(1, total + 1)
        at = {first} if interrupts == 1 else {first, first + rng.randrange(1, 60)}
        interrupted, _ = _traced_call(tap, x, at)  # with grad mode on: a leaked no_grad() would show
        hits += interrupted
        _assert_clean(net, before, values)
    assert hits > 100  # the sweep did interrupt calls (a few land after the call returned)
    with torch.no_grad():
        again = tap.features(x)  # no "ran more than once", same features
    for name in expected:
        torch.testing.assert_close(again[name], expected[name])


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer (POSIX)")
# A signal that lands inside a garbage-collector callback raises there, where Python can only report it as
# "unraisable"; the call then runs on uninterrupted, which the loop below tolerates.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_handler_raising_at_random_moments_leaves_no_hook() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run only in the main thread")
    net = _net()
    tap = FeatureTap(net, ["1", "4"], early_exit=True, preserve_buffers=True)
    x = torch.randn(2, 2, 6, 6)
    before = _buffers(net)
    values = {k: v.clone() for k, v in before.items()}
    start = time.perf_counter()
    for _ in range(20):
        with torch.no_grad():
            tap.features(x)
    per_call = (time.perf_counter() - start) / 20

    armed = [False]

    def handler(signum, frame):  # noqa: ANN001 - signal protocol
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, handler)
    rng = random.Random(0)
    interrupted = 0
    try:
        for _ in range(400):
            try:
                armed[0] = True
                signal.setitimer(signal.ITIMER_REAL, max(1e-6, rng.uniform(0.0, 1.2 * per_call)))
                tap.features(x)  # with grad mode on: a leaked no_grad() would show
                while armed[0]:  # the signal lands while armed: in the call, or here just after it
                    pass
            except KeyboardInterrupt:
                interrupted += 1
            _assert_clean(net, before, values)
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted > 0
    with torch.no_grad():
        tap.features(x)


class _Gate(nn.Module):
    """Blocks its forward until released, so that a tap call can be held open in one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is not threading.main_thread():
            self.entered.set()
            self.release.wait(10)
        return x


def _gated_net() -> tuple[nn.Module, _Gate]:
    gate = _Gate()
    return nn.Sequential(nn.Conv2d(1, 2, 1), gate, nn.ReLU(), nn.Conv2d(2, 1, 1)), gate


def test_a_second_thread_gets_a_clear_error_and_no_early_exit_escapes() -> None:
    net, gate = _gated_net()
    tap_a = FeatureTap(net, ["2"], early_exit=True)
    tap_b = FeatureTap(net, ["2"], early_exit=True)
    x = torch.randn(1, 1, 4, 4)
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            result["features"] = tap_a.features(x)
        except BaseException as exc:  # noqa: BLE001 - anything escaping is the failure under test
            result["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert gate.entered.wait(10)
        # a tap call on the same module from this thread is refused with a clear error
        with pytest.raises(RuntimeError, match="another thread"):
            tap_b.features(x)
        # a plain forward of the module here is not disturbed by the worker's hooks: no _EarlyExit escapes
        out = net(x)
        assert out.shape == (1, 1, 4, 4)
    finally:
        gate.release.set()
        thread.join(10)
    assert "error" not in result, result.get("error")
    assert list(result["features"]) == ["2"]  # type: ignore[call-overload]
    assert _hooks(net) == 0 and id(net) not in taps._RUNNING
    tap_b.features(x)  # the module is free again


def test_taps_on_one_module_in_sequence_across_threads_work() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1))
    tap = FeatureTap(net, ["1"], early_exit=True)
    x = torch.randn(1, 1, 4, 4)
    out: list[torch.Tensor] = []
    thread = threading.Thread(target=lambda: out.append(tap.features(x)["1"]))
    thread.start()
    thread.join(10)
    torch.testing.assert_close(out[0], tap.features(x)["1"])


def test_finish_removes_hooks_registered_but_not_yet_recorded_and_restores_grad_mode() -> None:
    """The two states an interrupt inside ``start()`` or a ``no_grad()`` exit can leave, built directly: hooks
    registered on the modules but missing from ``handles`` (an interrupt between ``register_forward_*hook`` and the
    append), input pre-hooks as well as output hooks, and grad mode switched off. ``finish()`` undoes both."""
    net = _net()
    tap = FeatureTap(net, ["1", "3:input", "4"], preserve_buffers=True)
    before = _buffers(net)
    values = {k: v.clone() for k, v in before.items()}
    call = taps._Call(tap, early_exit=False)
    call.start()
    assert _hooks(net) == 3
    call.handles.clear()  # as if each append had been interrupted
    torch.set_grad_enabled(False)
    try:
        call.finish()
        _assert_clean(net, before, values)
        call.finish()  # idempotent
        _assert_clean(net, before, values)
    finally:
        torch.set_grad_enabled(True)


def test_an_interrupt_at_every_opcode_of_start_and_finish_leaves_nothing_behind() -> None:
    """Every opcode of the claim / hook / buffer bookkeeping (``_Call.start`` and ``_Call.finish``), not a random
    sample: an interrupt at each one in turn, with input and output hooks and swapped buffers."""
    net = _net()
    tap = FeatureTap(net, ["1", "3:input", "4"], early_exit=True, preserve_buffers=True)
    x = torch.randn(2, 2, 6, 6)
    before = _buffers(net)
    values = {k: v.clone() for k, v in before.items()}

    class InBookkeeping(_Interrupter):
        def __call__(self, frame, event, arg):  # noqa: ANN001 - sys.settrace protocol
            name = frame.f_code.co_name
            if not (frame.f_code.co_filename.endswith("taps.py") and ("start" in name or "finish" in name)):
                return None  # count opcodes of these two methods only
            return super().__call__(frame, event, arg)

    _, total = _traced_call(tap, x, set(), InBookkeeping)
    assert total > 50, total  # both methods were traced
    for k in range(1, total + 1):
        interrupted, _ = _traced_call(tap, x, {k}, InBookkeeping)
        assert interrupted, k
        _assert_clean(net, before, values)
