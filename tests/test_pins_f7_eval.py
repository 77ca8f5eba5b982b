"""Tests pinning behaviour that the session-7 mutation rerun found unchecked, mostly in :mod:`scatloss.evaluate`.

Re-batching yields no empty batch when a new image size follows a run of whole batches, ``evaluate`` names
``buckets`` in its error for an empty bucket list and refuses a float or bool ``seed`` by name, and
:func:`scatloss.functional.semantic_contrastive_loss` runs its additive normalisation of bf16 features in
float32. Each expectation is the documented contract, an exact message or a float64 InfoNCE written out.
"""

from __future__ import annotations

import pytest
import torch

from scatloss import evaluate as ev


def _identity(x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    return x


def test_rebatching_yields_no_empty_batch_when_the_size_changes_after_whole_batches() -> None:
    small, large = torch.zeros(4, 3, 12, 12), torch.ones(3, 3, 16, 16)
    got = [tuple(b.shape) for b in ev._batches([small, large], 2)]
    assert got == [(2, 3, 12, 12), (2, 3, 12, 12), (2, 3, 16, 16), (1, 3, 16, 16)]


def test_evaluate_names_buckets_for_an_empty_bucket_list() -> None:
    with pytest.raises(TypeError, match=r"^buckets: expected a non-empty sequence"):
        ev.evaluate(_identity, torch.zeros(2, 3, 16, 16), buckets=[])


@pytest.mark.parametrize("seed", [1.5, True])
def test_evaluate_refuses_a_seed_that_is_not_a_non_negative_int(seed: object) -> None:
    with pytest.raises(TypeError, match="seed: expected a non-negative int"):
        ev.evaluate(_identity, torch.zeros(2, 3, 16, 16), seed=seed)  # type: ignore[arg-type]


def test_additive_normalisation_of_half_precision_features_runs_in_float32() -> None:
    # normalize_eps: x / (|x| + eps) is computed in float32 for bf16 features, so the loss matches a float64
    # InfoNCE on the same (bf16-representable) values to float32 accuracy, far below bf16's 2**-8.
    from scatloss.functional import semantic_contrastive_loss

    gen = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(*s, generator=gen).to(torch.bfloat16) for s in ((6, 48), (6, 48), (6, 5, 48)))
    eps, tau = 1e-3, 0.07

    def unit(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x / (x.norm(dim=-1, keepdim=True) + eps)

    ua, up, un = unit(a), unit(p), unit(n)
    logits = torch.cat([(ua * up).sum(-1, keepdim=True), torch.einsum("bd,bmd->bm", ua, un)], dim=1) / tau
    want = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    got = semantic_contrastive_loss(a, p, n, temperature=tau, normalize_eps=eps, backend="torch")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5)
