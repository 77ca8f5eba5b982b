"""Tests pinning behaviour that mutation testing (run f5, helper s5) found unchecked in scattered functions.

The release adapter's ``SCAT_type`` option, the feature-list and reconstruction checks' error messages, the
size and bucket checks of :mod:`scatloss.masks`, the device and seed handling of the mask generators, the
fill-in fallback's exact pixel count, the Triton-op registration outside the interpreter, the fused SCAT
segmenter's default resampling, the batch chunks of the PyTorch fused losses and (CUDA only) the device of
the labels in :func:`scatloss.evaluate.binary_auroc`. Each test compares with an independent expectation: a
hand-computed value, the documented contract or an exact error message.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import scatloss.functional as SF
import scatloss.masks as masks_module
import scatloss.ops as ops_module
import scatloss.ops.torch_fused as TF
from scatloss.adapters import release as release_module
from scatloss.evaluate import binary_auroc, binary_average_precision
from scatloss.masks import MaskGenerator, bucket_name, free_form_mask, resample_hole
from scatloss.utils import peak_memory_bytes

# ----------------------------------------------------------------------------------------------------------------------
# adapters.release: the SCAT term's kind
# ----------------------------------------------------------------------------------------------------------------------


def test_release_adversarial_reads_the_scat_kind_from_args_scat_type() -> None:
    """``dualadv(args)`` maps ``args.SCAT_type`` (spelled as the release spells it) to the SCAT term's kind,
    independently of ``args.globalgan_type``, and refuses an unknown name naming ``args.SCAT_type``."""
    adv = release_module.ReleaseAdversarial(SimpleNamespace(globalgan_type="hingegan", SCAT_type="lsgan"))
    assert (adv.global_kind, adv.scat_kind) == ("hinge", "ls")
    adv = release_module.dualadv(SimpleNamespace(globalgan_type="lsgan", SCAT_type="nsgan"))
    assert (adv.global_kind, adv.scat_kind) == ("ls", "bce")
    with pytest.raises(
        ValueError,
        match=r"^args\.SCAT_type: expected one of \['hingegan', 'lsgan', 'nsgan'\] \(the release's names\), "
        r"got 'wgan'$",
    ):
        release_module.ReleaseAdversarial(SimpleNamespace(globalgan_type="hingegan", SCAT_type="wgan"))


# ----------------------------------------------------------------------------------------------------------------------
# functional: input checks
# ----------------------------------------------------------------------------------------------------------------------


def test_an_empty_one_dimensional_anchor_layer_is_refused_as_an_empty_batch() -> None:
    """A ``(0,)`` anchor layer gets the one empty-batch error (``B >= 1``), checked before its dimensions."""
    empty = [torch.zeros(0)]
    message = r"^anchor_feats\[0\]: expected a non-empty batch \(B >= 1\), got shape \(0,\)$"
    with pytest.raises(ValueError, match=message):
        SF.textural_contrastive_loss(empty, empty, empty)


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 2, 3, 4, 4)])
def test_reconstruction_loss_names_a_prediction_that_is_not_4d(shape: tuple[int, ...]) -> None:
    """``prediction`` must be ``(B, C, H, W)``: a 3-D or 5-D one is refused for its dimensions, by name."""
    image = torch.zeros(2, 3, 4, 4)
    message = rf"^prediction: expected a 4-D tensor, got shape \({', '.join(map(str, shape))}\)$"
    with pytest.raises(ValueError, match=message):
        SF.reconstruction_loss(torch.zeros(shape), image)


# ----------------------------------------------------------------------------------------------------------------------
# masks: size and bucket checks, devices, seeds, the fill-in fallback
# ----------------------------------------------------------------------------------------------------------------------


def test_resample_hole_names_the_w_axis_of_a_bad_size() -> None:
    """A non-positive or fractional width is reported as ``w = ...`` (the height's errors say ``h``)."""
    hole = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"^size: expected a pair \(h, w\) of positive ints, got w = 0$"):
        resample_hole(hole, (2, 0))
    with pytest.raises(TypeError, match=r"^size: expected a pair \(h, w\) of positive ints, got w = float 2\.0$"):
        resample_hole(hole, (2, 2.0))  # type: ignore[arg-type]


def test_an_empty_bucket_lo_equal_to_hi_is_refused() -> None:
    """Buckets are half-open ``[lo, hi)``: ``lo == hi`` holds no ratio and is refused (``lo < hi``)."""
    message = r"^bucket: expected 0 <= lo < hi <= 1, got \(0\.3, 0\.3\)$"
    with pytest.raises(ValueError, match=message):
        bucket_name((0.3, 0.3))
    with pytest.raises(ValueError, match=message):
        free_form_mask(16, 16, bucket=(0.3, 0.3), seed=0)


def test_mask_generator_puts_its_masks_on_the_requested_device() -> None:
    """``sample(device=...)`` returns the masks on that device (``meta`` here), drawn on the CPU as usual."""
    masks = MaskGenerator(16, 16, seed=0).sample(2, device="meta")
    assert masks.device.type == "meta"
    assert masks.shape == (2, 1, 16, 16) and masks.dtype == torch.float32
    masks = MaskGenerator(16, 16, seed=0).sample(1, device=torch.device("meta"))
    assert masks.device.type == "meta"


def test_an_unseeded_mask_uses_a_seed_drawn_as_randint_0_to_2_62_from_the_global_rng() -> None:
    """Without ``generator`` or ``seed`` the seed is ``torch.randint(0, 2**62)`` from the global RNG: after
    ``torch.manual_seed(k)`` the mask is the one seeded with the value that draw gives (reproducible streams)."""
    with torch.random.fork_rng():
        for k in (0, 7):
            torch.manual_seed(k)
            seed = int(torch.randint(0, 2**62, (1,)).item())
            torch.manual_seed(k)
            unseeded = free_form_mask(16, 16, bucket=1)
            assert torch.equal(unseeded, free_form_mask(16, 16, bucket=1, seed=seed))


def test_the_fallback_grows_a_mask_to_exactly_n_min_pixels() -> None:
    """The fill-in fallback adds boundary pixels only until the mask holds ``n_min``: from the centre pixel of a
    7x7 mask to 4 pixels it takes 3 of the 8 neighbours (the ring is larger than needed)."""
    mask = np.zeros((7, 7), dtype=bool)
    mask[3, 3] = True
    masks_module._grow(mask, 1, 4, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 4
    assert mask[3, 3] and int(mask[2:5, 2:5].sum()) == 4  # the added pixels are neighbours of the centre


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_mask_made_by_the_fallback_alone_has_the_bucket_s_smallest_pixel_count(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """With no shape allowed, the mask comes from the fallback alone, which stops at the bucket's smallest count:
    20 hole pixels of 100 for the bucket ``(0.2, 0.4)``."""
    monkeypatch.setattr(masks_module, "_MAX_CANDIDATES", 0)
    mask = free_form_mask(10, 10, bucket=(0.2, 0.4), seed=seed)
    assert int(mask.sum()) == 20


# ----------------------------------------------------------------------------------------------------------------------
# ops: registration outside the interpreter, the fused segmenter's default resampling
# ----------------------------------------------------------------------------------------------------------------------


def test_register_op_outside_the_interpreter_registers_a_pure_triton_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``TRITON_INTERPRET`` (the GPU path) ``register_op`` registers ``fn`` as ``scatloss::<name>`` through
    ``torch.library.triton_op``, with no mutated arguments."""
    pytest.importorskip("triton")
    import torch._library.triton as torch_triton_library

    from scatloss.ops import _triton_common

    monkeypatch.setattr(_triton_common, "_interpreting", lambda: False)
    # triton_op scans fn's source for kernels with a helper that imports torch._inductor (a second on CPU): fn
    # launches none, so the scan's answer is known
    monkeypatch.setattr(torch_triton_library, "get_inner_triton_kernels", lambda fn: [])

    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def twice_fake(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    name = f"pins_s5_{uuid.uuid4().hex[:12]}"  # an op name registers once per process
    _triton_common.register_op(name, twice, twice_fake)
    # the schema of a pure function of a tensor: no argument marked as mutated (``Tensor(a!)``)
    assert str(getattr(torch.ops.scatloss, name).default._schema) == f"scatloss::{name}(Tensor x) -> Tensor"


def test_fused_scat_segmenter_loss_resamples_by_area_by_default() -> None:
    """``scatloss.ops.scat.scat_segmenter_loss`` without ``resample`` averages each 2x2 block of a 4x4 mask.

    Hinge, fake logits 0.5 and real logits 2: each pixel costs ``(1 - h) 0.5 + h 1.5 + 0 = 0.5 + h``. The mask's
    blocks are one full block and one with a single hole pixel off its top-left corner: area gives
    ``h = (1, 0, 0, 1/4)``, mean loss 0.8125 (nearest would give 0.75, max 1.0)."""
    pytest.importorskip("triton")
    if not ops_module._interpreting():
        pytest.skip("the fused kernels run on CPU tensors under TRITON_INTERPRET=1")
    from scatloss.ops import scat as ops_scat

    fake, real = torch.full((1, 1, 2, 2), 0.5), torch.full((1, 1, 2, 2), 2.0)
    hole = torch.zeros(1, 1, 4, 4)
    hole[0, 0, :2, :2] = 1.0
    hole[0, 0, 2, 3] = 1.0
    assert float(ops_scat.scat_segmenter_loss(fake, real, hole)) == pytest.approx(0.8125, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# ops.torch_fused: batch chunks count every element of a sample
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bce", "ls"])
def test_fused_generator_chunks_count_all_channels_of_a_sample(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-element temporaries are made for batch chunks of about ``_CHUNK_ELEMS`` elements, counting every
    channel: with the limit at one ``(4, 8, 8)`` sample, the (non-hinge) loss of a ``(8, 4, 8, 8)`` map keeps at
    most two one-sample temporaries alive (counted in bytes), not a map of the whole batch."""
    b, c, s = 8, 4, 8
    monkeypatch.setattr(TF, "_CHUNK_ELEMS", c * s * s)
    z = torch.randn(b, c, s, s, generator=torch.Generator().manual_seed(0))
    sample_bytes = c * s * s * z.element_size()
    peak = peak_memory_bytes(lambda: TF.scat_generator(z, None, kind, "sum"))
    assert peak <= 2 * sample_bytes + 64
    expected = _generator_sum_reference(z, kind)
    torch.testing.assert_close(TF.scat_generator(z, None, kind, "sum"), expected, rtol=1e-5, atol=1e-4)


def _generator_sum_reference(z: torch.Tensor, kind: str) -> torch.Tensor:
    """Eq. 2 summed over all pixels with ``l_G(z) = softplus(-z)`` (bce) or ``(z - 1)^2`` (ls), in float64."""
    zd = z.double()
    per_pixel = torch.nn.functional.softplus(-zd) if kind == "bce" else (zd - 1) ** 2
    return per_pixel.sum().to(z.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# evaluate: labels on another device than the scores (CUDA only)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ranking_metrics_take_cpu_labels_for_cuda_scores() -> None:
    """Labels are moved to the scores' device: CUDA scores with CPU labels give the hand-computed AUROC (3 of
    the 4 positive-negative pairs ranked right) and AP (``1/2 * 1 + 1/2 * 2/3``)."""
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8], device="cuda")
    labels = torch.tensor([0, 0, 1, 1])
    assert binary_auroc(scores, labels) == pytest.approx(0.75)
    assert binary_average_precision(scores, labels) == pytest.approx(5 / 6)
