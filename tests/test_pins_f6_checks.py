"""Tests pinning behaviour that mutation testing (run f6, helper h7) found unchecked in input checks and dispatch.

The textural contrastive loss's feature-list checks (what counts as a list of layers, the name each error
gives, layers that are not ``(B, ...)`` tensors), the reconstruction loss's check of ``image``, the batch
chunks of the PyTorch fused losses (limit per device, the boundary, samples of one element) and the
``"auto"`` backend's choice between Triton and PyTorch. Each test compares with an independent expectation:
the documented contract, a hand-computed value or an exact error message.
"""

from __future__ import annotations

import re

import pytest
import torch

import scatloss.functional as SF
import scatloss.ops as ops_module
import scatloss.ops.torch_fused as TF

# ----------------------------------------------------------------------------------------------------------------------
# functional._check_feature_lists (through textural_contrastive_loss)
# ----------------------------------------------------------------------------------------------------------------------


def _layers(*shapes: tuple[int, ...], device: str = "cpu") -> list[torch.Tensor]:
    return [torch.ones(s, device=device) for s in shapes]


@pytest.mark.parametrize("container", [set, frozenset, lambda x: dict.fromkeys(x)], ids=["set", "frozenset", "dict"])
def test_textural_feature_lists_must_be_sequences(container: object) -> None:
    """A collection that is not a sequence (a set, a dict: sized and iterable, but unordered) is refused with
    the documented ``TypeError`` naming the argument, even though every other list is fine."""
    feats = _layers((2, 3))
    with pytest.raises(TypeError, match=r"^positive_feats: expected a sequence \(list or tuple\) of per-layer tensors"):
        SF.textural_contrastive_loss(feats, container(feats), feats)  # type: ignore[operator]


@pytest.mark.parametrize("which", ["anchor_feats", "positive_feats", "negative_feats"])
def test_textural_feature_lists_name_the_layer_that_is_not_float(which: str) -> None:
    """A non-floating layer is refused with a ``TypeError`` naming the list and the layer index (here layer 1)."""
    lists = {k: _layers((2, 3), (2, 3)) for k in ("anchor_feats", "positive_feats", "negative_feats")}
    lists[which][1] = torch.ones(2, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=rf"^{re.escape(which)}\[1\]: expected a floating-point tensor"):
        SF.textural_contrastive_loss(**lists)


def test_textural_feature_layers_on_two_devices_name_layer_0() -> None:
    """Layers of one list on different devices (CPU, then meta) are refused naming ``anchor_feats[0]`` and the
    offending layer, as the exact message of the device check."""
    cpu, meta = _layers((2, 3)), _layers((2, 3), device="meta")
    a, p, n = cpu + meta, cpu + list(meta), cpu + list(meta)
    expected = "device mismatch: expected all inputs on one device, got anchor_feats[0] on cpu, anchor_feats[1] on meta"
    with pytest.raises(ValueError, match=rf"^{re.escape(expected)}$"):
        SF.textural_contrastive_loss(a, p, n)


@pytest.mark.parametrize("shape", [(), (3,), (2, 0), (2, 0, 4)], ids=str)
def test_textural_feature_layers_must_be_nonempty_batched(shape: tuple[int, ...]) -> None:
    """The docstring's ``(B, ...)`` layers: a scalar or 1-D layer (no feature dimension) and a layer with no
    elements (``B >= 1`` but an empty feature dimension) are refused, naming the layer and its shape."""
    layer = [torch.ones(shape)]
    expected = f"anchor_feats[0]: expected a non-empty (B, ...) tensor, got shape {shape}"
    with pytest.raises(ValueError, match=rf"^{re.escape(expected)}$"):
        SF.textural_contrastive_loss(layer, [torch.zeros(shape)], [torch.zeros(shape)])


# ----------------------------------------------------------------------------------------------------------------------
# functional.reconstruction_loss: image must be 4-D
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 1, 3, 4, 4)], ids=str)
def test_reconstruction_loss_names_an_image_that_is_not_4d(shape: tuple[int, ...]) -> None:
    """A ``(B, C, H, W)`` prediction with an image of another rank is refused as a bad ``image`` (its rank),
    not as a shape mismatch of ``prediction``."""
    expected = f"image: expected a 4-D tensor, got shape {shape}"
    with pytest.raises(ValueError, match=rf"^{re.escape(expected)}$"):
        SF.reconstruction_loss(torch.zeros(1, 3, 4, 4), torch.zeros(shape))


# ----------------------------------------------------------------------------------------------------------------------
# ops.torch_fused._chunks
# ----------------------------------------------------------------------------------------------------------------------

_E = 1 << 17  # the documented chunk size on CPU: 2**17 elements


def test_fused_chunk_size_constant() -> None:
    """The chunk size the tests below count with: ``2**17`` elements (512 KiB of float32)."""
    assert _E == TF._CHUNK_ELEMS


def test_fused_chunks_whole_map_up_to_the_limit_on_cpu() -> None:
    """On the CPU a map of exactly ``2**17`` elements is done in one go (``None``); one more sample's worth is
    split into batch chunks of ``2**17 // per_sample`` rows."""
    assert TF._chunks(torch.empty(2, _E // 2)) is None
    assert TF._chunks(torch.empty(1, _E)) is None
    assert TF._chunks(torch.empty(3, _E // 2)) == [slice(0, 2), slice(2, 4)]


def test_fused_chunks_count_a_one_element_sample_as_one() -> None:
    """Samples of a single element (``(B,)`` or ``(B, 1, 1, 1)``) count one element each: ``2**17`` of them are
    still one chunk, one more splits into chunks of ``2**17`` rows."""
    assert TF._chunks(torch.empty(_E)) is None
    assert TF._chunks(torch.empty(_E, 1, 1, 1)) is None
    assert TF._chunks(torch.empty(_E + 1)) == [slice(0, _E), slice(_E, 2 * _E)]


def test_fused_chunks_are_32_times_larger_off_the_cpu() -> None:
    """Off the CPU (here the meta device) the limit is ``32 * 2**17`` elements: a map of exactly that size is one
    go, one sample more is split into chunks of 32 samples of ``2**17`` elements."""
    assert TF._chunks(torch.empty(2, _E, device="meta")) is None
    assert TF._chunks(torch.empty(32, _E, device="meta")) is None
    assert TF._chunks(torch.empty(33, _E, device="meta")) == [slice(0, 32), slice(32, 64)]
    assert TF._chunks(torch.empty(2, _E)) == [slice(0, 1), slice(1, 2)]  # the same map on the CPU


# ----------------------------------------------------------------------------------------------------------------------
# ops.resolve_backend: "auto"
# ----------------------------------------------------------------------------------------------------------------------


class _OnCuda(torch.Tensor):
    """A CPU tensor that reports ``is_cuda``: stands in for CUDA tensors in the backend choice (no GPU needed)."""

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True


def test_auto_backend_picks_triton_on_cuda_unless_the_mask_needs_a_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """``"auto"`` with every tensor on CUDA and Triton installed is exactly ``"triton"``; a ``data`` tensor (the
    hole mask) that requires grad keeps ``"torch"``, unless grad mode is off; without Triton it is ``"torch"``."""
    monkeypatch.setattr(ops_module, "triton_available", lambda: True)
    fake = torch.zeros(2, 1, 4, 4).as_subclass(_OnCuda)
    hole = torch.zeros(2, 1, 4, 4).as_subclass(_OnCuda)
    assert fake.is_cuda and hole.is_cuda
    assert ops_module.resolve_backend("auto", fake, hole, data=(hole,)) == "triton"
    assert ops_module.resolve_backend("auto", fake, hole) == "triton"
    hole.requires_grad_()
    assert ops_module.resolve_backend("auto", fake, hole, data=(hole,)) == "torch"
    with torch.no_grad():
        assert ops_module.resolve_backend("auto", fake, hole, data=(hole,)) == "triton"
    assert ops_module.resolve_backend("auto", fake, torch.zeros(2, 1, 4, 4), data=(hole.detach(),)) == "torch"
    monkeypatch.setattr(ops_module, "triton_available", lambda: False)
    assert ops_module.resolve_backend("auto", fake, hole.detach(), data=(hole.detach(),)) == "torch"
