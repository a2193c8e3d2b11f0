"""The documentation site (mkdocs.yml, docs/, API reference from the docstrings) builds with `mkdocs build --strict`:
a broken link, a missing page or a docstring griffe cannot read fails the build."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
    proc = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-q', '-f', str(ROOT / 'mkdocs.yml'),
                           '-d', str(tmp_path / 'site')],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / 'site' / 'index.html').is_file()
    api = (tmp_path / 'site' / 'api' / 'core' / 'index.html').read_text()
    for name in ('objax.TrainVar', 'objax.Jit', 'objax.Parallel', 'objax.VarCollection', 'objax.Remat', 'objax.Scan',
                 'objax.Cond', 'objax.WhileLoop', 'objax.ForiLoop'):
        assert f'id="{name}"' in api, f'{name} missing from the API reference'
