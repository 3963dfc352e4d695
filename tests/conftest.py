"""Shared pytest configuration: hypothesis profiles (derandomized under CI so the suite never flakes)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=10, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=20,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module. A long-lived xdist worker otherwise keeps every
    executable of the ~600 modules' tests it ran mapped, and near the end of the suite runs out of memory maps
    (MemoryError on small ops, "Failed to materialize symbols" from XLA's JIT) -- seen in a full run."""
    yield
    jax.clear_caches()
