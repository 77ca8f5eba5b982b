"""Intermediate features of any network, by layer name.

:class:`FeatureTap` runs a module and returns, besides its output, the outputs (or inputs) of the
layers you name. The textural contrastive loss (Eq. 3) needs the outputs of the first encoder blocks
of the discriminator; the semantic contrastive loss (Eq. 4) needs its pooled bottleneck vector, which
in the authors' released discriminator exists only as the *input* of its last ``Linear`` (hence the
``":input"`` suffix).

Forward hooks are registered at the start of each call and removed in a ``finally`` block, so no hook
outlives a call, whatever happens: an exception, a closed tap, a tap that is garbage-collected.

Example::

    >>> import torch
    >>> from torch import nn
    >>> D = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 4 * 4, 1))
    >>> with FeatureTap(D, ["1", "3:input"]) as tap:
    ...     logit, feats = tap(torch.randn(2, 3, 4, 4))
    >>> logit.shape, feats["1"].shape, feats["3:input"].shape
    (torch.Size([2, 1]), torch.Size([2, 8, 4, 4]), torch.Size([2, 128]))
"""

from __future__ import annotations

import difflib
import sys
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from scatloss._validation import _is_compiling, describe

__all__ = ["FeatureTap"]

INPUT_SUFFIX = ":input"
"""Suffix of a layer name that asks for the layer's first positional input instead of its output."""


class _EarlyExit(BaseException):
    """Raised from a hook to stop the forward once every requested feature is captured.

    A ``BaseException`` so that a module's own ``except Exception`` cannot swallow it; it carries the
    identity of the call that raised it, and only that call catches it.
    """

    def __init__(self, token: object) -> None:
        super().__init__("FeatureTap early exit (internal; never escapes FeatureTap)")
        self.token = token


def _unwrap(module: nn.Module) -> tuple[nn.Module, bool]:
    """Strip DistributedDataParallel / DataParallel (``.module``) and torch.compile (``._orig_mod``).

    Returns the innermost module and whether a torch.compile wrapper was met on the way.
    """
    wrappers: tuple[type, ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    compiled = False
    while True:
        if isinstance(module, wrappers):
            module = cast(nn.Module, module.module)
        elif _is_compiled(module):
            compiled = True
            module = cast(nn.Module, module._orig_mod)
        else:
            return module, compiled


def _is_compiled(module: nn.Module) -> bool:
    # A compiled module exists only if torch._dynamo was imported; importing it here would cost seconds.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    optimized = getattr(eval_frame, "OptimizedModule", None)
    return optimized is not None and isinstance(module, optimized)


def _clone(value: Any) -> Any:
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, value)


_RUNNING: dict[int, tuple[int, object]] = {}
"""``id(module) -> (thread id, claim)`` of every module a tap call is running, to refuse concurrent use.

``dict.setdefault`` and ``dict.pop`` are atomic under the GIL, so claiming needs no lock (a lock acquired just
before an asynchronous ``KeyboardInterrupt`` could never be released)."""


class _Call:
    """State of one tap call: captured features, their version counters, hooks, swapped-out buffers, grad mode.

    Everything :meth:`finish` undoes is recorded *before* it is done (hook functions before they are registered,
    original buffers before they are swapped, the module claim before it is taken), and :meth:`finish` is
    idempotent, so running it again after an asynchronous exception (a signal handler raising
    ``KeyboardInterrupt`` at any bytecode) completes the cleanup.
    """

    def __init__(self, tap: FeatureTap, early_exit: bool) -> None:
        self.tap = tap
        self.early_exit = early_exit
        self.active = True
        self.thread = 0 if _is_compiling() else threading.get_ident()
        self.grad_mode = torch.is_grad_enabled()  # restored by finish(): an interrupted no_grad() exit leaks it
        self.features: dict[str, Any] = {}
        self.versions: dict[str, list[tuple[torch.Tensor, int]]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.originals: list[tuple[nn.Module, str, torch.Tensor]] = []
        self.claim: tuple[int, object] = (self.thread, self)
        self.key = id(tap._inner)
        self.hooks: list[tuple[nn.Module, bool, Any]] = [
            (module, is_input, self._pre_hook(name) if is_input else self._hook(name))
            for name, (module, is_input) in tap._targets.items()
        ]

    def capture(self, name: str, value: Any) -> None:
        if name in self.features:
            raise RuntimeError(
                f"FeatureTap: layer {name!r} ran more than once in one forward (a module reused at several "
                "places, e.g. one activation shared by every block), so its name does not identify one "
                "tensor; tap distinct layers around it instead"
            )
        tensors = [v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)]
        # Inference tensors have no version counter: cloning them is the only way to be safe.
        if self.tap.clone or any(t.is_inference() for t in tensors):
            value = _clone(value)
        else:
            self.versions[name] = [(t, t._version) for t in tensors]
        self.features[name] = value
        if self.early_exit and len(self.features) == len(self.tap.layers):
            raise _EarlyExit(self)

    def start(self) -> None:
        """Claim the module, swap in scratch buffers (``preserve_buffers``), register the hooks."""
        current = _RUNNING.setdefault(self.key, self.claim)
        if current is not self.claim and current[0] != self.thread:
            raise RuntimeError(
                f"FeatureTap: {type(self.tap._inner).__name__} is already being run by a FeatureTap call in another "
                "thread; concurrent calls on one module are not supported (hooks and swapped buffers are state of "
                "the module): serialise the calls, or give each thread its own copy of the module"
            )
        if self.tap.preserve_buffers:
            self.originals = self.tap._buffers()
            self.tap._swap_in_scratch_buffers(self.originals)
        for module, is_input, fn in self.hooks:
            if is_input:
                self.handles.append(module.register_forward_pre_hook(fn))
            else:
                self.handles.append(module.register_forward_hook(fn))

    def _in_thread(self) -> bool:
        """Whether the running forward is in the calling thread (a compiled tap traces in it: no check there)."""
        return _is_compiling() or threading.get_ident() == self.thread

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.active and self._in_thread():  # other threads' forwards are not ours
                self.capture(name, output)

        return hook

    def _pre_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not (self.active and self._in_thread()):
                return
            if not args:
                raise RuntimeError(
                    f"FeatureTap: layer {name!r} was called without positional arguments; "
                    f"{INPUT_SUFFIX!r} captures the first positional input"
                )
            self.capture(name, args[0])

        return hook

    def finish(self) -> None:
        """Undo :meth:`start`, whatever part of it ran: idempotent, safe to repeat after an interruption."""
        self.active = False  # first: a hook that somehow survives does nothing
        for handle in self.handles:
            handle.remove()  # idempotent
        for module, is_input, fn in self.hooks:  # a hook registered but not yet recorded in self.handles
            hooks = module._forward_pre_hooks if is_input else module._forward_hooks
            for key in [k for k, v in list(hooks.items()) if v is fn]:
                hooks.pop(key, None)
        self.handles.clear()
        if self.originals:
            FeatureTap._put_back_buffers(self.originals)
            self.originals = []
        if _RUNNING.get(self.key) is self.claim:
            _RUNNING.pop(self.key, None)
        if torch.is_grad_enabled() != self.grad_mode:
            torch.set_grad_enabled(self.grad_mode)

    def check(self) -> dict[str, Any]:
        missing = [name for name in self.tap.layers if name not in self.features]
        if missing:
            raise RuntimeError(
                f"FeatureTap: layer(s) {', '.join(repr(n) for n in missing)} did not run during the forward "
                "(a branch not taken, or a module that forward() never calls), so no feature could be captured"
            )
        stale = [
            (name, before, t._version)
            for name, pairs in self.versions.items()
            for t, before in pairs
            if t._version != before
        ]
        if stale:
            name, before, after = stale[0]
            layer = name[: -len(INPUT_SUFFIX)] if name.endswith(INPUT_SUFFIX) else name
            where = "the input" if name.endswith(INPUT_SUFFIX) else "the output"
            others = ", ".join(repr(s[0]) for s in stale[1:])
            inplace = self.tap._inplace_modules
            culprits = ""
            if inplace:
                culprits = f" (modules with inplace=True here: {', '.join(repr(n) for n in inplace[:6])})"
            raise RuntimeError(
                f"FeatureTap: the tensor captured as {name!r} ({where} of layer {layer!r}) was modified in place "
                f"later in the forward (version counter {before} -> {after}), most likely by an in-place "
                f"activation such as LeakyReLU(inplace=True){culprits}; it no longer holds {where} of {layer!r}"
                + (f" (also affected: {others})" if others else "")
                + ". Fix: tap the activation that follows instead, build that activation with inplace=False, "
                "or pass clone=True to FeatureTap"
            )
        return {name: self.features[name] for name in self.tap.layers}


class FeatureTap:
    """Run a module and capture the outputs (or inputs) of named layers.

    ``output, features = tap(x, *args, **kwargs)`` calls ``module(x, *args, **kwargs)`` and returns its
    output unchanged (tensor, tuple, dict, ...) together with ``features``, a dict keyed by the requested
    names, in the requested order. Each feature is the tensor the layer returned (or received), still
    attached to the autograd graph; its shape is whatever that layer produces, e.g. ``(B, C_i, H_i, W_i)``
    for a convolution block or ``(B, C)`` for a pooled vector.

    Names are those of ``named_modules()`` of the unwrapped module: ``DistributedDataParallel`` /
    ``DataParallel`` wrappers (``.module``) are looked through, so ``"enc.0"`` names the same layer with
    or without them, and the call goes through the wrapper. A name ending in ``":input"`` captures
    the layer's first positional input instead of its output (the released discriminator's pooled
    semantic vector exists only as the input of its last ``Linear``). ``""`` names the module itself.
    Spectral norm, both ``torch.nn.utils.spectral_norm`` and ``torch.nn.utils.parametrizations.spectral_norm``,
    leaves layer names unchanged.

    Hooks exist only during a call: they are registered when it starts and removed in a ``finally``
    block, so none outlives an exception, :meth:`close` or garbage collection, and no feature of one
    call reaches the next. The tap never changes grad mode: wrap calls in ``torch.no_grad()`` for passes
    that need no gradient. The hooks act only on forwards in the calling thread, and a tap call on a module
    that a tap call in another thread is running raises ``RuntimeError`` (hooks and swapped buffers are state
    of the module); ``DataParallel`` over several GPUs (whose replicas run in threads) is not supported,
    ``DistributedDataParallel`` is. Cleanup is safe against asynchronous exceptions (a signal handler raising
    ``KeyboardInterrupt`` at any moment): no hook outlives the call and preserved buffers are put back.

    ``torch.compile``: a compiled module is refused (``TypeError``), because a graph compiled without
    forward hooks ignores hooks added later (``torch._dynamo.config.skip_nnmodule_hook_guards``), so its
    features would be missing or depend on what ran before. Compile the tap instead:
    ``torch.compile(FeatureTap(D, layers))`` gives correct features; Dynamo breaks the graph at each
    hook, so the network between tapped layers is compiled and the hooks run eagerly. The in-place
    check works there too.

    Args:
        module: the network, possibly wrapped by ``DistributedDataParallel`` / ``DataParallel``.
        layers: layer names (see above), at least one, no duplicates.
        clone: clone each captured tensor when it is captured (differentiable), so that a later in-place
            operation cannot change it. Without it, a captured tensor that a later layer modifies in place
            (e.g. a convolution output followed by ``LeakyReLU(inplace=True)``) is detected through its
            version counter and raises ``RuntimeError``. Under ``torch.inference_mode()`` tensors have no
            version counter, so captured tensors are always cloned there.
        early_exit: stop the forward as soon as the last requested layer has run, skipping the rest of
            the network (e.g. a U-Net discriminator's decoder when only encoder features are needed).
            The module output is then not computed and ``output`` is ``None``. Under
            ``DistributedDataParallel``, gradients that flow through early-exit features into the
            module's parameters are not all-reduced (DDP's post-forward step never runs): use early exit
            for passes that need no parameter gradient, such as the generator step.
        preserve_buffers: leave every buffer of the module untouched, so that extraction keeps
            ``state_dict()`` bit-identical: spectral norm's power-iteration vectors (``weight_u`` /
            ``weight_v``, or ``_u`` / ``_v`` of the parametrization) and BatchNorm running statistics,
            which a train-mode forward otherwise advances. The forward runs on clones of the buffers
            (one copy of the buffers per call) and the originals are put back afterwards, so outputs,
            features and gradients are exactly those of a plain forward.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` or is ``torch.compile``'d; ``layers`` is not a
            sequence of strings; an option is not a bool.
        ValueError: ``layers`` is empty, has duplicates, or names an unknown layer (the message lists
            close matches).
        RuntimeError: at call time, a requested layer did not run, ran more than once, or its captured
            tensor was modified in place; the tap is closed; or a tap call in another thread is running the
            same module.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> D = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8, 1, 3))
        >>> tap = FeatureTap(D, ["1", "2"])
        >>> out, feats = tap(torch.randn(2, 3, 8, 8))
        >>> list(feats), tuple(feats["1"].shape)
        (['1', '2'], (2, 8, 8, 8))
        >>> tuple(tap.features(torch.randn(2, 3, 8, 8))["1"].shape)  # early exit: the last conv never runs
        (2, 8, 8, 8)
        >>> tap.close()
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[str],
        *,
        clone: bool = False,
        early_exit: bool = False,
        preserve_buffers: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {describe(module)}")
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            hint = f"; wrap a single name in a list: [{layers!r}]" if isinstance(layers, str) else ""
            raise TypeError(f"layers: expected a sequence of layer names (str), got {describe(layers)}{hint}")
        bad = [name for name in layers if not isinstance(name, str)]
        if bad:
            raise TypeError(f"layers: expected every layer name to be a str, got {describe(bad[0])}")
        if len(layers) == 0:
            raise ValueError("layers: expected at least one layer name, got an empty sequence")
        duplicates = sorted({name for name in layers if list(layers).count(name) > 1})
        if duplicates:
            raise ValueError(f"layers: expected distinct names, got duplicates {duplicates}")
        for option, value in (("clone", clone), ("early_exit", early_exit), ("preserve_buffers", preserve_buffers)):
            if not isinstance(value, bool):
                raise TypeError(f"{option}: expected a bool, got {describe(value)}")

        inner, compiled = _unwrap(module)
        if compiled:
            raise TypeError(
                f"module: expected an eager module, got a torch.compile'd {type(inner).__name__} "
                f"({type(module).__name__}). Forward hooks added after a graph was compiled are ignored by it "
                "(torch._dynamo.config.skip_nnmodule_hook_guards), so features would be missing or depend on "
                "what ran before. Fix: tap the module before compiling and compile the tap, "
                "tap = torch.compile(FeatureTap(module._orig_mod, layers)), or run "
                "FeatureTap(module._orig_mod, layers) eagerly (it shares the compiled module's parameters)"
            )
        named = dict(inner.named_modules(remove_duplicate=False))
        targets: dict[str, tuple[nn.Module, bool]] = {}
        for name in layers:
            if name in named:
                targets[name] = (named[name], False)
            elif name.endswith(INPUT_SUFFIX) and name[: -len(INPUT_SUFFIX)] in named:
                targets[name] = (named[name[: -len(INPUT_SUFFIX)]], True)
            else:
                raise ValueError(self._unknown(name, inner, list(named)))

        self._called: nn.Module = module
        self._inner: nn.Module = inner
        self._targets = targets
        self._inplace_modules = [n for n, m in named.items() if getattr(m, "inplace", False) is True]
        self._layers: tuple[str, ...] = tuple(layers)
        self._closed = False
        self._clone = clone
        self._early_exit = early_exit
        self._preserve_buffers = preserve_buffers

    @staticmethod
    def _unknown(name: str, inner: nn.Module, names: list[str]) -> str:
        base = name[: -len(INPUT_SUFFIX)] if name.endswith(INPUT_SUFFIX) else name
        candidates = [n for n in names if n]
        close = difflib.get_close_matches(base, candidates, n=5, cutoff=0.5)
        if close:
            found = "close matches: " + ", ".join(repr(c) for c in close)
        else:
            shown = ", ".join(repr(c) for c in candidates[:12]) + (", ..." if len(candidates) > 12 else "")
            found = f"no close match; names include: {shown}" if candidates else "it has no submodules"
        return (
            f"layers: expected names from named_modules() of {type(inner).__name__} "
            f"(optionally ending in {INPUT_SUFFIX!r}), got unknown layer {name!r}; {found}"
        )

    @property
    def layers(self) -> tuple[str, ...]:
        """The requested names, in order (the keys of every ``features`` dict)."""
        return self._layers

    @property
    def module(self) -> nn.Module:
        """The module as given (possibly DDP-wrapped); it is what each call runs."""
        return self._called

    @property
    def clone(self) -> bool:
        """Whether captured tensors are cloned when captured."""
        return self._clone

    @property
    def early_exit(self) -> bool:
        """Whether calls stop the forward after the last requested layer (``output`` is then ``None``)."""
        return self._early_exit

    @property
    def preserve_buffers(self) -> bool:
        """Whether calls leave the module's buffers untouched."""
        return self._preserve_buffers

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run the module on ``args`` / ``kwargs``; return ``(output, features)``.

        ``output`` is exactly what the module returns, or ``None`` with ``early_exit=True``.
        ``features`` maps each requested name, in order, to the captured tensor.
        """
        return self._run(args, kwargs, early_exit=self.early_exit)

    def features(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the module only as far as needed and return the features (always early exit).

        Equivalent to ``tap(*args, **kwargs)[1]`` with ``early_exit=True``: layers after the last
        requested one never run.
        """
        return self._run(args, kwargs, early_exit=True)[1]

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, early_exit: bool) -> tuple[Any, dict[str, Any]]:
        self._check_open()
        call = _Call(self, early_exit)
        output: Any = None
        try:
            call.start()
            try:
                output = self._called(*args, **kwargs)
            except _EarlyExit as stop:
                if stop.token is not call:
                    if getattr(stop.token, "active", False):  # an enclosing call's, in this thread: let it stop
                        raise
                    raise RuntimeError(
                        "FeatureTap: an early exit of a finished call reached this one (internal error)"
                    ) from None
        finally:
            # Nested so that an asynchronous exception raised inside one cleanup attempt runs the next one.
            try:
                call.finish()
            finally:
                try:
                    call.finish()
                finally:
                    call.finish()
        features = call.check()
        return output, features

    def _buffers(self) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """Every ``(module, name, buffer)`` of the unwrapped module (nothing is changed)."""
        return [
            (mod, name, buf) for mod in self._inner.modules() for name, buf in mod._buffers.items() if buf is not None
        ]

    @staticmethod
    def _swap_in_scratch_buffers(originals: list[tuple[nn.Module, str, torch.Tensor]]) -> None:
        """Replace every buffer by a clone for the duration of the forward (``originals`` from :meth:`_buffers`).

        The forward then updates (and autograd saves) the clones, and the originals are never written:
        putting them back leaves ``state_dict()`` bit-identical without an in-place copy, which would
        bump version counters and break the backward of a graph that saved a buffer (BatchNorm saves
        its running statistics even in training mode).
        """
        with torch.no_grad():
            for mod, name, buf in originals:
                mod._buffers[name] = buf.clone()

    @staticmethod
    def _put_back_buffers(originals: list[tuple[nn.Module, str, torch.Tensor]]) -> None:
        for mod, name, buf in reversed(originals):
            mod._buffers[name] = buf

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("FeatureTap: this tap is closed; create a new FeatureTap to extract features again")

    def close(self) -> None:
        """Close the tap: later calls raise ``RuntimeError``. Idempotent.

        No hook needs removing: hooks live only during a call.
        """
        self._closed = True
        self._targets = {}

    def __enter__(self) -> FeatureTap:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else type(self._inner).__name__
        options = ", ".join(f"{k}=True" for k in ("clone", "early_exit", "preserve_buffers") if getattr(self, k))
        return f"FeatureTap({state}, layers={list(self._layers)}" + (f", {options})" if options else ")")
