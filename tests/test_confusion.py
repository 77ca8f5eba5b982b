"""Segmentation-confusion metrics of scatloss.evaluate: hole-detection AUROC / AP / IoU and the detectability probe."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scatloss import evaluate as ev
from scatloss.masks import BUCKETS

# ---- AUROC / AP / IoU against hand-computed values and a brute-force reference ---------------------------------------


def _pairwise_auroc(scores: list[float], labels: list[bool]) -> float:
    """P(positive scores above negative), ties 1/2: counted over every (positive, negative) pair."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _threshold_ap(scores: list[float], labels: list[bool]) -> float:
    """AP from its definition: for each distinct threshold t (high to low), precision of {s >= t} times the recall
    gained."""
    n_pos = sum(labels)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        called = [y for s, y in zip(scores, labels, strict=True) if s >= t]
        tp = sum(called)
        recall = tp / n_pos
        ap += (recall - prev_recall) * tp / len(called)
        prev_recall = recall
    return ap


def test_ties_hand_computed() -> None:
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8])
    labels = torch.tensor([False, True, False, True])
    # pairs (pos, neg): (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, 0.1) 1, (0.8, 0.4) 1 -> 3.5 / 4
    assert ev.binary_auroc(scores, labels) == pytest.approx(0.875, abs=1e-12)
    # thresholds 0.8: P 1, R 1/2; 0.4: P 2/3, R 1 -> 1/2 * 1 + 1/2 * 2/3
    assert ev.binary_average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3, abs=1e-12)


def test_all_tied_scores_give_chance() -> None:
    scores = torch.full((10,), 0.3)
    labels = torch.tensor([True, False] * 5)
    assert ev.binary_auroc(scores, labels) == 0.5
    assert ev.binary_average_precision(scores, labels) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40).filter(
        lambda xs: 0 < sum(y for _, y in xs) < len(xs)
    )
)
def test_auroc_and_ap_match_brute_force_references(pairs: list[tuple[int, bool]]) -> None:
    scores = [s / 6 for s, _ in pairs]  # few distinct values: many ties
    labels = [y for _, y in pairs]
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)
    assert ev.binary_auroc(s, y) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)
    assert ev.binary_average_precision(s, y) == pytest.approx(_threshold_ap(scores, labels), abs=1e-12)
    # 0/1 float labels and any shape are accepted
    assert ev.binary_auroc(s.reshape(1, -1), y.double()) == ev.binary_auroc(s, y)


def test_auroc_and_ap_agree_with_torchmetrics() -> None:
    tm = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 9, (500,), generator=g).float() / 8
    labels = torch.rand(500, generator=g) < 0.35
    assert ev.binary_auroc(scores, labels) == pytest.approx(float(tm.binary_auroc(scores, labels.long())), abs=1e-6)
    assert ev.binary_average_precision(scores, labels) == pytest.approx(
        float(tm.binary_average_precision(scores, labels.long())), abs=1e-6
    )


def _holes() -> torch.Tensor:
    hole = torch.zeros(2, 1, 8, 8)
    hole[0, :, 2:5, 1:6] = 1
    hole[1, :, 5:, :3] = 1
    return hole


def test_perfect_constant_and_inverted_segmenters() -> None:
    hole = _holes()
    fraction = float(hole.mean())
    perfect = ev.hole_detection_metrics(hole.clone(), hole)
    assert (perfect["auroc"], perfect["ap"], perfect["iou"]) == (1.0, 1.0, 1.0)
    assert perfect["hole_pixels"] == int(hole.sum()) and perfect["known_pixels"] == hole.numel() - int(hole.sum())
    constant = ev.hole_detection_metrics(torch.full_like(hole, 0.5), hole)
    assert constant["auroc"] == 0.5
    assert constant["ap"] == pytest.approx(fraction)  # one threshold: precision = the hole fraction
    assert constant["iou"] == pytest.approx(fraction)  # 0.5 >= 0.5: every pixel called generated
    inverted = ev.hole_detection_metrics(1.0 - hole, hole)
    assert inverted["auroc"] == 0.0 and inverted["iou"] == 0.0


def test_degenerate_masks_give_none_never_nan() -> None:
    p = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    none = ev.hole_detection_metrics(p * 0.4, torch.zeros(2, 1, 8, 8))  # no holes, nothing called generated
    assert none == {"auroc": None, "ap": None, "iou": None, "hole_pixels": 0, "known_pixels": 128}
    called = ev.hole_detection_metrics(p * 0.4 + 0.6, torch.zeros(2, 1, 8, 8))
    assert called["iou"] == 0.0 and called["auroc"] is None
    full = ev.hole_detection_metrics(p, torch.ones(2, 1, 8, 8, dtype=torch.bool))
    assert full["auroc"] is None and full["ap"] == 1.0 and full["known_pixels"] == 0


@pytest.mark.parametrize(
    ("p", "hole", "error", "match"),
    [
        (torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 16, 16), ValueError, r"p_generated: expected the shape of hole"),
        (torch.rand(2, 1, 8, 8) * 2, torch.zeros(2, 1, 8, 8), ValueError, r"p_generated: expected probabilities"),
        (torch.full((2, 1, 8, 8), math.nan), torch.zeros(2, 1, 8, 8), ValueError, r"p_generated: expected prob"),
        (torch.rand(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.5), ValueError, r"hole: expected a binary mask"),
        (torch.rand(2, 8, 8), torch.zeros(2, 1, 8, 8), ValueError, r"p_generated: expected a 4-D"),
        (torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long), TypeError, r"hole: expected a float"),
    ],
)
def test_bad_maps_and_masks_raise_naming_the_argument(p, hole, error, match) -> None:
    with pytest.raises(error, match=match):
        ev.hole_detection_metrics(p, hole)


def test_scores_and_labels_are_checked() -> None:
    with pytest.raises(ValueError, match="labels: expected as many elements"):
        ev.binary_auroc(torch.rand(4), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores: expected finite"):
        ev.binary_auroc(torch.tensor([0.1, math.inf]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="labels: expected 0/1"):
        ev.binary_average_precision(torch.rand(3), torch.tensor([0, 2, 1]))
    with pytest.raises(TypeError, match="scores"):
        ev.binary_auroc(torch.tensor([1, 2]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="threshold"):
        ev.hole_detection_metrics(torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), threshold=1.0)


# ---- segmentation_confusion: the segmenter sees the composite ------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 16, 16, generator=g), 3, stride=1, padding=1)
    return (smooth * 2 - 1).clamp(-1, 1)


def test_metric_is_computed_on_the_composite_not_the_raw_prediction(images: torch.Tensor) -> None:
    """G returns the ground truth in the holes and noise elsewhere. The composite equals the ground truth, so an
    oracle that flags pixels differing from the ground truth flags nothing (AUROC 0.5); on the raw prediction it
    would flag every known pixel and none of the holes (AUROC 0)."""
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(3)) * 0.5

    def generator(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return hole * images + (1 - hole) * (images + noise - 0.25).clamp(-1, 1)

    def oracle(x: torch.Tensor) -> torch.Tensor:  # logit of "real": +5 where x equals the ground truth
        return torch.where((x - images).abs().amax(1, keepdim=True) > 1e-6, -5.0, 5.0)

    report = ev.segmentation_confusion(oracle, generator, images, batch_size=len(images))
    assert report.overall.auroc == 0.5
    assert report.overall.iou == 0.0  # nothing called generated, holes exist
    hole = torch.zeros(len(images), 1, 16, 16)
    hole[:, :, 4:12, 4:12] = 1
    raw = ev.hole_detection_metrics(torch.sigmoid(-oracle(generator(images, hole))), hole)
    assert raw["auroc"] == 0.0  # the same oracle on the raw prediction: the opposite answer


def test_a_segmenter_that_sees_the_fill_finds_the_holes(images: torch.Tensor) -> None:
    """Holes filled with a value absent from the images (2.0, out of range), segmenter = "is it 2.0": perfect."""

    def fill_two(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        return torch.full_like(corrupted, 1.0)

    def finds_white(x: torch.Tensor) -> torch.Tensor:
        return torch.where((x >= 0.999).all(1, keepdim=True), -5.0, 5.0)

    report = ev.segmentation_confusion(finds_white, fill_two, images * 0.9, batch_size=2)
    assert report.overall.auroc == 1.0 and report.overall.ap == 1.0 and report.overall.iou == 1.0
    assert [b.count for b in report.buckets] == [4, 4, 4] and report.overall.count == 12
    assert all(b.auroc == 1.0 for b in report.buckets)
    prob = ev.segmentation_confusion(
        lambda x: torch.sigmoid(-finds_white(x)), fill_two, images * 0.9, output="prob_generated"
    )
    assert prob.overall.auroc == 1.0


def test_report_round_trips_and_renders(images: torch.Tensor) -> None:
    report = ev.segmentation_confusion(lambda x: x[:, :1] * 3, lambda c, h: c, images, seed=2)
    again = ev.ConfusionReport.from_dict(report.to_dict())
    assert again == report
    table = report.to_markdown()
    assert "AUROC" in table and "IoU @ 0.5" in table and "| all |" in table.splitlines()[0] + "|"
    assert report["all"] is report.overall and report["20-40%"].count == len(images)


def test_empty_bucket_is_none(images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    def half(height: int, width: int, *, bucket=None, generator=None, seed=None) -> torch.Tensor:
        mask = torch.zeros(1, height, width)
        mask[:, : height // 2] = 1.0  # always 50 % missing -> "40-60%"
        return mask

    monkeypatch.setattr(ev, "free_form_mask", half)
    report = ev.segmentation_confusion(lambda x: x[:, :1], lambda c, h: c, images)
    assert report["40-60%"].count == 3 * len(images)
    empty = report["0-20%"]
    assert empty.count == 0 and (empty.auroc, empty.ap, empty.iou) == (None, None, None)
    assert "–" in report.to_markdown()
    assert "NaN" not in report.to_json()


@pytest.mark.parametrize(
    ("segmenter", "error", "match"),
    [
        (lambda x: x[:, :1, ::2, ::2], ValueError, r"segmenter: expected a per-pixel map of shape"),
        (lambda x: x, ValueError, r"segmenter: expected a per-pixel map"),
        (lambda x: (x.mean(), x[:, :1]), TypeError, r"D\(x\)\[1\]"),
        (lambda x: x[:, :1] * math.nan, ValueError, "segmenter: expected finite"),
        (3, TypeError, "segmenter: expected a callable"),
    ],
)
def test_a_segmenter_returning_the_wrong_thing_raises(images: torch.Tensor, segmenter, error, match) -> None:
    with pytest.raises(error, match=match):
        ev.segmentation_confusion(segmenter, lambda c, h: c, images)


def test_prob_output_out_of_range_raises(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="prob_generated"):
        ev.segmentation_confusion(lambda x: x[:, :1] * 5, lambda c, h: c, images, output="prob_generated")


# ---- the detectability probe -----------------------------------------------------------------------------------------


def _grey(corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(corrupted)


def test_probe_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(images: torch.Tensor) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = ev.detectability(_grey, images, images, steps=3, batch_size=2, seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # the probe's init and sampling used private RNGs
    torch.manual_seed(999)
    second = ev.detectability(_grey, images, images, steps=3, batch_size=2, seed=5)
    assert first.to_dict() == second.to_dict()
    other = ev.detectability(_grey, images, images, steps=3, batch_size=2, seed=6)
    assert other.to_dict() != first.to_dict()
    assert first.probe is not None and first.probe["steps"] == 3 and first.probe["kind"] == "bce"
    assert "Probe segmenter" in first.to_markdown()


def test_probe_restores_the_generators_mode_and_checks_the_probe(images: torch.Tensor) -> None:
    class G(torch.nn.Module):
        def forward(self, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
            assert not self.training
            return corrupted * 0

    g = G().train()
    ev.detectability(g, images, images, steps=1, batch_size=2)
    assert g.training
    with pytest.raises(ValueError, match="segmenter: expected the probe to return"):
        ev.detectability(g, images, images, steps=1, segmenter=lambda: torch.nn.Conv2d(3, 2, 1))
    with pytest.raises(ValueError, match="train_images: expected images of one size"):
        ev.detectability(g, [images[0], torch.zeros(3, 32, 32)], images, steps=1)


def test_unavailable_device_is_a_clear_value_error(images: torch.Tensor) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the error path cannot be reached")
    with pytest.raises(ValueError, match=r"device: expected an available device, got 'cuda'"):
        ev.segmentation_confusion(lambda x: x[:, :1], _grey, images, device="cuda")


def test_default_buckets_are_used(images: torch.Tensor) -> None:
    report = ev.segmentation_confusion(lambda x: x[:, :1], _grey, images)
    assert tuple(b.bounds for b in report.buckets) == BUCKETS


def test_probe_seeds_no_cuda_generator_for_a_cpu_run(images: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU run seeds only torch's CPU generator (restored by ``fork_rng``): ``torch.manual_seed`` would also
    re-seed every CUDA device's generator, which ``fork_rng(devices=[])`` does not give back, so on a machine with
    a GPU the caller's CUDA random state would change. Checked through the CUDA seeding functions, as this
    machine may have no GPU."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("manual_seed_all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("manual_seed", seed)))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    calls.clear()
    first = ev.detectability(_grey, images, images, steps=2, batch_size=2, seed=5, device="cpu")
    assert calls == []
    assert torch.equal(torch.rand(3), expected_next)
    second = ev.detectability(_grey, images, images, steps=2, batch_size=2, seed=5, device="cpu")
    assert first.to_dict() == second.to_dict()


class _StopProbe(Exception):
    pass


def test_probe_seeds_the_run_device_generator_for_a_cuda_run(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA run forks the RNG of the run device only and seeds that device's generator (inside
    ``torch.cuda.device(run_device)``), not every device's, before the probe is built. Checked through the CUDA
    functions, as this machine may have no GPU: the run stops when the probe factory is called."""
    cuda1 = torch.device("cuda", 1)
    events: list[tuple[str, object]] = []

    class _Fork:
        def __init__(self, devices: list[torch.device]) -> None:
            events.append(("fork_rng", list(devices)))

        def __enter__(self) -> None:
            events.append(("enter", None))

        def __exit__(self, *exc: object) -> None:
            events.append(("exit", None))

    class _Device:
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def __enter__(self) -> None:
            events.append(("cuda.device", self.device))

        def __exit__(self, *exc: object) -> None:
            events.append(("cuda.device exit", self.device))

    def factory() -> torch.nn.Module:
        events.append(("factory", None))
        raise _StopProbe

    monkeypatch.setattr(ev, "_resolve_device", lambda device, generator, images: cuda1)
    monkeypatch.setattr(torch.random, "fork_rng", lambda devices: _Fork(devices))
    monkeypatch.setattr(torch.cuda, "device", _Device)
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: events.append(("manual_seed", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: events.append(("manual_seed_all", seed)))
    state = torch.get_rng_state()
    try:
        with pytest.raises(_StopProbe):
            ev.detectability(_grey, images, images, steps=1, batch_size=2, seed=7, segmenter=factory)
        # the CPU generator was seeded with `seed` too
        assert torch.equal(torch.rand(4), torch.rand(4, generator=torch.Generator().manual_seed(7)))
    finally:
        torch.set_rng_state(state)
    assert events == [
        ("fork_rng", [cuda1]),
        ("enter", None),
        ("cuda.device", cuda1),
        ("manual_seed", 7),
        ("cuda.device exit", cuda1),
        ("factory", None),
        ("exit", None),
    ]
