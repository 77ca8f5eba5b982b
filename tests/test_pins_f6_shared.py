"""Tests pinning behaviour that mutation testing (run f6, helper h9) found unchecked in the checkpoint-migration helper
:func:`scatloss.adapters.load_optimizer_state` and in the state the release drop-in
(:mod:`scatloss.adapters.release`) shares between ``dualadv`` and ``Contrastive``.

``load_optimizer_state``: the exact ``TypeError`` for what is not an optimiser state dict (either key missing, a
non-dict; the first six keys named), parameters without state before ones with state, several new groups, the shape
check of 1-D state tensors, and an optimiser whose ``state_dict()`` does not list one index per parameter.
The release drop-in: the error naming ``args.globalgan_type``, ``chunk_size`` (default 8) of the autograd-free passes
whichever of ``dualadv.G`` and ``Contrastive`` builds the shared state first, and ``num_feat_layers`` other than 5.
Each test compares with an independent expectation: the documented contract, an exact error message, the optimiser's
own moments or the release's textural term written out.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from scatloss.adapters import load_optimizer_state
from scatloss.adapters import release as release_module
from tests.test_adapters_release import assert_close_f64, release_case, release_reference

ARGS = SimpleNamespace(globalgan_type="hingegan", SCAT_type="hingegan")


def _params(*shapes: tuple[int, ...]) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]


def _step(opt: torch.optim.Optimizer, with_grad: list[nn.Parameter]) -> None:
    """One optimiser step in which only ``with_grad`` have a gradient (the others get no state)."""
    gen = torch.Generator().manual_seed(1)
    for p in with_grad:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()


# ----------------------------------------------------------------------------------------------------------------------
# load_optimizer_state
# ----------------------------------------------------------------------------------------------------------------------

_NOT_A_STATE = "state_dict: expected an optimiser state dict with 'state' and 'param_groups', got "


def test_load_optimizer_state_refuses_what_is_not_an_optimiser_state_dict() -> None:
    """``TypeError`` naming the type and, for a dict, its first six keys (sorted), when ``state`` or ``param_groups``
    is missing (either one is enough) or the object is not a dict at all."""
    (p,) = _params((2,))
    opt = torch.optim.Adam([p])
    full = opt.state_dict()
    cases: list[tuple[Any, str]] = [
        ({"weights": 1}, "dict with keys ['weights']"),
        ({k: 0 for k in "gfedcba"}, "dict with keys ['a', 'b', 'c', 'd', 'e', 'f']"),
        ({"param_groups": full["param_groups"]}, "dict with keys ['param_groups']"),
        ({"state": full["state"]}, "dict with keys ['state']"),
        (None, "NoneType"),
        (["param_groups", "state"], "list"),
    ]
    for state_dict, what in cases:
        with pytest.raises(TypeError) as info:
            load_optimizer_state(opt, state_dict)
        assert str(info.value) == _NOT_A_STATE + what


def test_load_optimizer_state_keeps_the_state_after_a_parameter_without_state() -> None:
    """A parameter that had no gradient in the old run has no state; the parameters after it keep theirs (the old
    optimiser's exact moments), and the one without state starts fresh."""
    a, b, c = _params((2,), (3,), (4,))
    old = torch.optim.Adam([a, b, c], lr=1e-3)
    _step(old, [b, c])
    saved = old.state_dict()
    new = torch.optim.Adam([a, b, c], lr=1e-3)
    assert load_optimizer_state(new, saved) == [0]
    assert a not in new.state
    for p in (b, c):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(new.state[p][key], old.state[p][key], rtol=0, atol=0)


def test_load_optimizer_state_starts_every_new_group_fresh() -> None:
    """Two groups added after the old one: both start fresh with their own hyperparameters, the old group keeps its
    moments and its saved learning rate."""
    a, b, c, d = _params((2,), (3,), (4,), (5,))
    old = torch.optim.Adam([a], lr=1e-3)
    _step(old, [a])
    saved = old.state_dict()
    new = torch.optim.Adam([a], lr=5e-3)
    new.add_param_group({"params": [b, c], "lr": 2e-3})
    new.add_param_group({"params": [d], "lr": 3e-3})
    assert load_optimizer_state(new, saved) == [0, 2, 1]
    assert [g["lr"] for g in new.param_groups] == [1e-3, 2e-3, 3e-3]
    torch.testing.assert_close(new.state[a]["exp_avg"], old.state[a]["exp_avg"], rtol=0, atol=0)
    assert all(p not in new.state for p in (b, c, d))


def test_load_optimizer_state_checks_the_shape_of_one_dimensional_state() -> None:
    """Biases (1-D parameters) registered in another order: the old moment of shape (3,) would land on a (4,)
    parameter, which is refused with ``ValueError`` naming both shapes; nothing is loaded."""
    b3, b4 = _params((3,), (4,))
    old = torch.optim.Adam([b3, b4])
    _step(old, [b3, b4])
    new = torch.optim.Adam([b4, b3])
    msg = r"group 0, parameter 0: state 'exp_avg' has shape \(3,\), expected \(4,\) .*the parameter order differs"
    with pytest.raises(ValueError, match=msg):
        load_optimizer_state(new, old.state_dict())
    assert len(new.state) == 0


def test_load_optimizer_state_refuses_a_state_dict_that_does_not_list_every_parameter() -> None:
    """An optimiser whose ``state_dict()`` hides its first parameter (a post hook, undone by a load pre hook) does
    not tell which parameter each saved index is: a moment of shape (2,) saved for the (3,) parameter ``p1`` must be
    refused (``ValueError``), not loaded onto it."""
    p0, p1, p2 = _params((2,), (3,), (3,))
    opt = torch.optim.SGD([p0, p1, p2], lr=0.1, momentum=0.9)

    def hide_first(_opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        state_dict["param_groups"][0]["params"] = state_dict["param_groups"][0]["params"][1:]
        state_dict["state"].pop(0, None)
        return state_dict

    def restore_first(_opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        groups = [dict(g) for g in state_dict["param_groups"]]
        groups[0]["params"] = [0, *groups[0]["params"]]
        return {**state_dict, "param_groups": groups}

    opt.register_state_dict_post_hook(hide_first)
    opt.register_load_state_dict_pre_hook(restore_first)
    saved = opt.state_dict()
    assert saved["param_groups"][0]["params"] == [1, 2]
    saved["state"] = {1: {"momentum_buffer": torch.zeros(2)}}
    with pytest.raises(ValueError):
        load_optimizer_state(opt, saved)
    assert p1 not in opt.state


# ----------------------------------------------------------------------------------------------------------------------
# The release drop-in: dualadv's options and the state shared with Contrastive
# ----------------------------------------------------------------------------------------------------------------------


def test_release_adversarial_error_names_args_globalgan_type() -> None:
    """An unknown ``globalgan_type`` is refused with a message naming the option as the trainer spells it."""
    with pytest.raises(ValueError) as info:
        release_module.dualadv(SimpleNamespace(globalgan_type="wgan", SCAT_type="hingegan"))
    assert str(info.value) == (
        "args.globalgan_type: expected one of ['hingegan', 'lsgan', 'nsgan'] (the release's names), got 'wgan'"
    )


def test_release_passes_take_chunk_size_images_whoever_builds_the_shared_state() -> None:
    """The trainer's order (``dualadv.G`` then ``Contrastive``, defaults): the anchor comes from ``G``; x and x~ of 4
    images run whole and the 12 off-diagonal negatives as 8 + 4 (default ``chunk_size`` 8). ``Contrastive`` first on
    a fresh D with ``chunk_size=2``: everything but the anchor in passes of at most 2. The terms are the release's."""
    netD, images, masks, corrupted, comp = release_case(4)
    seen: list[int] = []
    netD.blocks[0][0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    adv = release_module.dualadv(ARGS)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    adv.G(netD, comp, 1 - masks)
    assert seen == [4]
    seen.clear()
    text, sem = loss(corrupted, comp, images, masks, 5)
    assert seen == [4, 4, 8, 4]
    want = release_reference(netD, loss.mlp, comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])

    netD, images, masks, corrupted, comp = release_case(3)
    seen = []
    netD.blocks[0][0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16, chunk_size=2)
    text, sem = loss(corrupted, comp, images, masks, 5)
    assert seen == [3, 2, 1, 2, 1, 2, 2, 2]  # anchor, x in 2 + 1, x~ in 2 + 1, 6 negatives in 2s
    want = release_reference(netD, loss.mlp, comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])


def _release_textural(netD: nn.Module, comp: torch.Tensor, images: torch.Tensor, corrupted: torch.Tensor, n: int):
    """The release's textural term for ``num_feat_layers = n``: residual features 1 .. n-1 of the composite (anchor),
    the ground truth (positive) and the corrupted input (negative), ``l1(a, p) / (l1(a, n) + 1e-7)`` summed."""
    with torch.no_grad():
        fo, fg, fc = netD(comp)[0], netD(images)[0], netD(corrupted)[0]
    return sum((fo[i] - fg[i]).abs().mean() / ((fo[i] - fc[i]).abs().mean() + 1e-7) for i in range(1, n))


def test_release_contrastive_num_feat_layers_picks_the_textural_layers() -> None:
    """``num_feat_layers = 3`` reads residual features 1 and 2 only; a later call with 5 reads 1 .. 4 (the shared
    state is rebuilt for the new count); the semantic term is the release's in both."""
    netD, images, masks, corrupted, comp = release_case(3)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    want = release_reference(netD, loss.mlp, comp, images, masks)
    for n in (3, 5, 3):
        text, sem = loss(corrupted, comp, images, masks, n)
        assert_close_f64(text, _release_textural(netD, comp, images, corrupted, n))
        assert_close_f64(sem, want["sem"])
    assert_close_f64(_release_textural(netD, comp, images, corrupted, 5), want["text"])


def test_release_contrastive_chunk_size_holds_when_dualadv_g_builds_the_shared_state() -> None:
    """The trainer's order with a non-default ``chunk_size``: ``dualadv.G`` runs first (and builds the shared
    state), then ``Contrastive(chunk_size=2)`` still runs x, x~ and the negatives in passes of at most 2 (it was
    once silently left at 8), and keeps the anchor ``G`` computed; with ``num_feat_layers = 3`` the next ``G``
    keeps the three-layer state instead of rebuilding it for five."""
    netD, images, masks, corrupted, comp = release_case(3)
    seen: list[int] = []
    netD.blocks[0][0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    adv = release_module.dualadv(ARGS)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16, chunk_size=2)
    adv.G(netD, comp, 1 - masks)
    text, sem = loss(corrupted, comp, images, masks, 5)
    assert seen == [3, 2, 1, 2, 1, 2, 2, 2]  # anchor from G, x in 2 + 1, x~ in 2 + 1, 6 negatives in 2s
    want = release_reference(netD, loss.mlp, comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])
    loss(corrupted, comp, images, masks, 3)
    state = release_module._shared(netD)
    assert (len(state.criterion.textural_layers), state.criterion.chunk_size) == (2, 2)
    adv.G(netD, comp, 1 - masks)
    assert release_module._shared(netD) is state
