"""Every ```python block of docs/*.md and README.md runs here, and the output a page shows is checked.

Conventions (also in docs/contributing.md):
- The ```python blocks of one page run in order, in one namespace, in a fresh interpreter started in an empty
  temporary directory (files a page writes land there), on one CPU device. A page whose text holds the comment
  `<!-- docs-test: devices=N -->` runs on N virtual CPU devices instead.
- A ```python block followed directly (only blank lines between) by a ```text block must print exactly that text:
  lines are compared after collapsing runs of spaces, and `...` in an expected line matches any characters. On
  JAX 0.11 and later, printed numbers may differ from the page's by 1e-6 relative (see `_printed.py`).
- Blocks in any other language (```bash for shell commands, ```text on its own) are not run.
"""

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _printed

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / 'docs').glob('**/*.md')) + [ROOT / 'README.md']
_FENCE = re.compile(r'^```(\w*)\s*$')
_DEVICES = re.compile(r'<!--\s*docs-test:\s*devices=(\d+)\s*-->')

# Runs in the page's interpreter: reads [(lineno, code, expected or None)] as JSON on stdin, runs each block with
# its stdout captured, and writes one JSON report per line to the real stdout.
_DRIVER = r'''
import contextlib, io, json, re, sys, traceback
blocks = json.load(sys.stdin)
out = sys.stdout
namespace = {'__name__': '__main__'}

def same(got, want):
    import jax
    tol = tolerance_for(jax.__version__)
    norm = lambda s: [' '.join(line.split()) for line in s.strip().splitlines()]
    got, want = norm(got), norm(want)
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        pattern = '.*'.join(re.escape(part) for part in w.split('...'))
        if not re.fullmatch(pattern, g) and not lines_match(g, w, tol):
            return False
    return True

for lineno, code, expected in blocks:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile('\n' * (lineno - 1) + code, PAGE, 'exec'), namespace)
    except BaseException:
        print(json.dumps({'line': lineno, 'error': traceback.format_exc(), 'printed': buf.getvalue()}), file=out)
        break
    if expected is not None and not same(buf.getvalue(), expected):
        print(json.dumps({'line': lineno, 'error': 'printed output differs', 'printed': buf.getvalue(),
                          'expected': expected}), file=out)
    out.flush()
'''


def extract_blocks(text: str):
    """[(line number of the block's first code line, code, expected output or None)] of the page's python blocks."""
    lines = text.splitlines()
    fences = []  # (lang, first content line index, end fence index)
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != '```':
                j += 1
            if j == len(lines):
                raise ValueError(f'unclosed code block at line {i + 1}')
            fences.append((m.group(1), i + 1, j))
            i = j + 1
        else:
            i += 1
    blocks = []
    for k, (lang, start, end) in enumerate(fences):
        if lang != 'python':
            continue
        expected = None
        if k + 1 < len(fences) and fences[k + 1][0] == 'text':
            nlang, nstart, nend = fences[k + 1]
            if all(not line.strip() for line in lines[end + 1:nstart - 1]):
                expected = '\n'.join(lines[nstart:nend])
        blocks.append((start + 1, '\n'.join(lines[start:end]) + '\n', expected))
    return blocks


def test_extract_blocks():
    page = 'intro\n```python\nprint(1)\n```\n\n```text\n1\n```\n```bash\nls\n```\n```python\nx = 2\n```\ntext\n```text\n2\n```\n'
    assert extract_blocks(page) == [(3, 'print(1)\n', '1'), (13, 'x = 2\n', None)]


def _run_page(page: Path, blocks, tmp_path) -> list:
    devices = _DEVICES.search(page.read_text())
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={devices.group(1) if devices else 1}',
               PYTHONPATH=os.pathsep.join([str(ROOT / 'src')] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
    driver = f'PAGE = {str(page)!r}\n' + inspect.getsource(_printed) + _DRIVER
    proc = subprocess.run([sys.executable, '-c', driver], input=json.dumps(blocks),
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, f'{page} crashed:\n{proc.stderr[-3000:]}'
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_driver_reports_wrong_output_and_errors(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('x')
    blocks = [(1, 'print("a   b")\n', 'a b'), (3, 'print("value 12")\n', 'value ...'), (5, 'print(3)\n', '4'),
              (7, 'raise KeyError("boom")\n', None), (9, 'print("never")\n', 'never')]
    reports = _run_page(page, blocks, tmp_path)
    assert [r['line'] for r in reports] == [5, 7]
    assert reports[0]['printed'] == '3\n'
    assert 'KeyError' in reports[1]['error'] and 'page.md", line 7' in reports[1]['error']


_RUNNABLE = [p for p in PAGES if extract_blocks(p.read_text())]  # the API reference pages hold no Python


@pytest.mark.parametrize('page', _RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in _RUNNABLE])
def test_page_examples(page, tmp_path):
    blocks = extract_blocks(page.read_text())
    reports = _run_page(page, blocks, tmp_path)
    messages = [f"{page.name}:{r['line']}: {r['error']}\n--- printed:\n{r['printed']}"
                + (f"--- expected:\n{r['expected']}" if 'expected' in r else '') for r in reports]
    assert not messages, '\n\n'.join(messages)


def test_printed_numbers_tolerance():
    """JAX 0.12's -0.52678293 passes for the guide's -0.52678305 (2 float32 ulps) only with a tolerance; a number
    20 ulps away (2.4e-6), a flipped sign or different text never passes."""
    guide = '[ 0.19307713 -0.52678305]'
    assert _printed.lines_match('[ 0.19307713 -0.52678293]', guide, tolerance=1e-6)
    assert not _printed.lines_match('[ 0.19307713 -0.52678293]', guide, tolerance=0)
    far = float(np.float32(-0.52678305) - 20 * np.spacing(np.float32(0.52678305)))
    assert not _printed.lines_match(f'[ 0.19307713 {far:.8f}]', guide, tolerance=1e-6)
    assert not _printed.lines_match('[ 0.19307713 0.52678305]', guide, tolerance=1e-6)
    assert not _printed.lines_match('( 0.19307713 -0.52678305]', guide, tolerance=1e-6)
    assert _printed.tolerance_for('0.10.2') == 0 and _printed.tolerance_for('0.12.1') == _printed.TOLERANCE
    assert _printed.lines_match('[ 0.58254874 -1.4342073 ]', '[ 0.5825488 -1.4342074]', tolerance=1e-6)
