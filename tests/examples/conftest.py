"""The `run` fixture of the example tests: runs a program of examples/ in a subprocess on CPU devices."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'
SRC = EXAMPLES.parent / 'src'


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """run(script, *args, devices=1, check=True, **env): runs examples/script on `devices` CPU devices, with
    extra environment variables `env`. The runs share a JAX compilation cache (the examples' persistent cache),
    so that a resumed run reuses the programs its first run compiled."""
    cache = str(tmp_path_factory.mktemp('jax_cache'))

    def run_example(script: str, *args, devices: int = 1, check: bool = True,
                    **extra_env: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu',
                   OBJAX_COMPILE_CACHE=cache, JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
        env['PYTHONPATH'] = os.pathsep.join([str(SRC), env.get('PYTHONPATH', '')])  # this checkout's objax
        env.update(extra_env)
        out = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                             text=True, env=env, timeout=300)
        if check:
            assert out.returncode == 0, f'{script} {args} failed:\n{out.stdout}\n{out.stderr[-3000:]}'
        return out

    return run_example
