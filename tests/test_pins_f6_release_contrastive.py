"""Tests pinning behaviour that mutation testing (run f6, helper h8) found unchecked in the release drop-in's
``Contrastive`` (:class:`scatloss.adapters.release.ReleaseContrastive`).

Its defaults (``no_mlp=False``, the head ``Linear(1024, 256) -> ReLU -> Linear(256, 256)``, ``temp = 0.07``
stored, ``chunk_size = 8``, ``num_feat_layers = 5``), ``no_mlp=True`` (no head: the release's terms on the raw
pooled features), where the head is placed (D's first parameter's device and floating dtype, else the defaults),
the ``num_feat_layers`` check (any int >= 2; ``2`` reads one textural layer), the error messages naming ``input``,
``gt`` and ``mask``, the chunked negative passes and a second call on the same composite. Each test compares with an
independent expectation: the release's computation written out (``release_reference``), the documented contract or
an exact error message.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from scatloss.adapters import release as release_module
from tests.test_adapters_release import ReleaseLikeD, assert_close_f64, release_case, release_reference

ARGS = SimpleNamespace(globalgan_type="hingegan", SCAT_type="hingegan")


# ----------------------------------------------------------------------------------------------------------------------
# construction: defaults and the head
# ----------------------------------------------------------------------------------------------------------------------


def test_contrastive_defaults_are_the_releases() -> None:
    """``Contrastive(args, netD)``: ``no_mlp`` False, a head ``Linear(1024, 256) -> ReLU -> Linear(256, 256)`` in
    D's dtype, ``temp`` 0.07 stored (not applied), ``chunk_size`` 8."""
    netD = ReleaseLikeD().double()
    loss = release_module.Contrastive(ARGS, netD)
    assert loss.no_mlp is False
    assert (loss.input_dim, loss.mlp_dim, loss.temp, loss.chunk_size) == (1024, 256, 0.07, 8)
    head = loss.mlp
    assert isinstance(head, nn.Sequential) and len(head) == 3
    assert isinstance(head[0], nn.Linear) and (head[0].in_features, head[0].out_features) == (1024, 256)
    assert isinstance(head[1], nn.ReLU)
    assert isinstance(head[2], nn.Linear) and (head[2].in_features, head[2].out_features) == (256, 256)
    assert all(p.dtype == torch.float64 for p in head.parameters())
    assert set(dict(loss.named_parameters())) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}


def test_contrastive_without_head_equals_the_release_without_mlp() -> None:
    """``no_mlp=True``: no head (``mlp`` is None, no parameters) and the terms are the release's with the pooled
    bottleneck features used as they are (the stand-in with an identity head)."""
    netD, images, masks, corrupted, comp = release_case(3)
    loss = release_module.Contrastive(ARGS, netD, True)
    assert loss.no_mlp is True
    assert loss.mlp is None and not list(loss.parameters())
    text, sem = loss(corrupted, comp, images, masks, 5)
    want = release_reference(netD, nn.Identity(), comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])


class _IntParamFirst(nn.Module):
    """A module whose first parameter is an integer (a frozen step counter) and whose second is float64."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = nn.Parameter(torch.zeros(1, dtype=torch.long), requires_grad=False)
        self.weight = nn.Parameter(torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("make_d", "device", "dtype"),
    [
        (lambda: nn.Linear(2, 2).double(), "cpu", torch.float64),
        (lambda: nn.Linear(2, 2, device="meta"), "meta", torch.float32),
        (lambda: nn.Identity(), "cpu", torch.float32),
        (_IntParamFirst, "cpu", torch.float32),
    ],
    ids=["float64", "meta", "no-parameters", "int-first-parameter"],
)
def test_contrastive_head_follows_d_first_parameter(make_d, device: str, dtype: torch.dtype) -> None:
    """The head is built on the device of D's first parameter, in its dtype when that is floating; a D without
    parameters, or whose first parameter is an integer, gives a head in the default dtype on the CPU."""
    loss = release_module.Contrastive(ARGS, make_d(), input_dim=4, mlp_dim=3)
    params = list(loss.mlp.parameters())
    assert len(params) == 4
    assert all(p.device.type == device and p.dtype == dtype for p in params)


# ----------------------------------------------------------------------------------------------------------------------
# forward: num_feat_layers, argument checks, chunks, repeated calls
# ----------------------------------------------------------------------------------------------------------------------


def test_contrastive_num_feat_layers_defaults_to_five_and_two_reads_one_layer() -> None:
    """Without ``num_feat_layers`` the terms are the release's with 5 (``residual_features[1:5]``); with 2 the
    textural term reads ``residual_features[1]`` only (the release's ratio of means, + 1e-7) and the semantic term
    is unchanged."""
    netD, images, masks, corrupted, comp = release_case(3)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    want = release_reference(netD, loss.mlp, comp, images, masks)
    text, sem = loss(corrupted, comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])
    text2, sem2 = loss(corrupted, comp, images, masks, 2)
    with torch.no_grad():
        fo, fg, fc = netD(comp)[0][1], netD(images)[0][1], netD(corrupted)[0][1]
        want_text2 = (fo - fg).abs().mean() / ((fo - fc).abs().mean() + 1e-7)
    assert_close_f64(text2, want_text2)
    assert_close_f64(sem2, want["sem"])


@pytest.mark.parametrize("value", [1, 0, -3, True, 5.0, "5"])
def test_contrastive_rejects_num_feat_layers_that_is_not_an_int_of_at_least_two(value: object) -> None:
    """``num_feat_layers`` below 2, a bool or a non-int raises ``ValueError`` naming it, before D runs."""
    netD, images, masks, corrupted, comp = release_case(2)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    with pytest.raises(ValueError, match=rf"^num_feat_layers: expected an int >= 2, got {value!r}$"):
        loss(corrupted, comp, images, masks, value)


def test_contrastive_errors_name_input_gt_and_mask() -> None:
    """A 3-D ``input`` or ``gt`` raises ``ValueError`` naming it; a ``mask`` whose batch differs from ``gt``'s raises
    ``ValueError`` naming ``mask`` and both sizes."""
    netD, images, masks, corrupted, comp = release_case(2)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    with pytest.raises(ValueError, match=r"^input: expected a 4-D tensor, got shape \(3, 32, 32\)$"):
        loss(corrupted[0], comp, images, masks)
    with pytest.raises(ValueError, match=r"^gt: expected a 4-D tensor, got shape \(3, 32, 32\)$"):
        loss(corrupted, comp, images[0], masks)
    with pytest.raises(ValueError, match=r"^mask: expected batch size 2 to match the other inputs, got 1$"):
        loss(corrupted, comp, images, masks[:1])


@pytest.mark.parametrize(
    ("b", "chunk_size", "sizes"),
    [
        (3, 2, [3, 2, 1, 2, 1, 2, 2, 2]),  # anchor, x in 2 + 1, x~ in 2 + 1, the 6 off-diagonal negatives in 2s
        (9, None, [9, 8, 1, 8, 1] + [8] * 9),  # default 8: x and x~ in 8 + 1, 72 negatives in 8s
    ],
)
def test_contrastive_chunk_size_sets_the_autograd_free_passes(b: int, chunk_size: int | None, sizes: list[int]) -> None:
    """``chunk_size`` (default 8) is the number of images per autograd-free pass of D: the anchor runs whole (with
    autograd), ``x``, ``x~`` and the negatives (every image under every other image's mask) in chunks; the terms
    are the release's."""
    netD, images, masks, corrupted, comp = release_case(b)
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16, **kwargs)
    seen: list[int] = []
    netD.blocks[0][0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    text, sem = loss(corrupted, comp, images, masks, 5)
    assert seen == sizes
    want = release_reference(netD, loss.mlp, comp, images, masks)
    assert_close_f64(text, want["text"])
    assert_close_f64(sem, want["sem"])


def test_contrastive_called_twice_on_one_composite_gives_the_same_terms() -> None:
    """Without ``dualadv.G`` in between, a second call on the same composite runs the anchor pass again and gives the
    same terms as the first (and as the release)."""
    netD, images, masks, corrupted, comp = release_case(3)
    loss = release_module.Contrastive(ARGS, netD, input_dim=32, mlp_dim=16)
    first = loss(corrupted, comp, images, masks, 5)
    second = loss(corrupted, comp, images, masks, 5)
    want = release_reference(netD, loss.mlp, comp, images, masks)
    for got in (first, second):
        assert_close_f64(got[0], want["text"])
        assert_close_f64(got[1], want["sem"])
