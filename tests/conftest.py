"""Test configuration: 8 virtual CPU devices for the multi-device tests (set before JAX is imported)."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
