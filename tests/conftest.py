"""Shared test configuration: hypothesis profiles and a guard for scatloss's global value-check flag."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from scatloss import _validation

# "ci" (default): few examples, no deadline (2 shared CPU cores); HYPOTHESIS_PROFILE=dev explores more.
# Under CI (CI=true) examples are derandomized so a run is reproducible; locally each run explores new ones.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
)
settings.register_profile("dev", max_examples=200, deadline=None)
# `make mutate`: the same examples for every mutant (a survivor must not be a lucky draw), no example database.
settings.register_profile(
    "mutate",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_value_checks():
    """No test may leak ``scatloss.set_value_checks(False)`` into the next one."""
    previous = _validation._VALUE_CHECKS
    yield
    _validation._VALUE_CHECKS = previous


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """One intra-op thread for modules of tiny tensors: on a busy 2-core machine each threaded op otherwise
    waits milliseconds for a worker to wake up (measured: adaptive_avg_pool2d on 3x1x21x33, 12 ms vs 26 us).
    Applied to the whole session: the suite runs under pytest-xdist with one worker per core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _grad_mode_is_left_on():
    """No test (nor the code under test) may leave autograd switched off for the tests after it: that once made
    two unrelated tests of the same worker fail with "element 0 of tensors does not require grad". The mode is
    put back, and the test that left it off errors."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left grad mode switched off (torch.is_grad_enabled() is False after it)")
