"""Test configuration: 8 virtual CPU devices for the multi-device tests (set before JAX is imported)."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(autouse=True)
def _fresh_default_generator():
    """Every test starts from the same default random stream, whatever ran before it in this worker."""
    import objax
    objax.random.DEFAULT_GENERATOR.seed(0)
    yield
