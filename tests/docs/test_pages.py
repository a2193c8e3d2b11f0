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

import _printed
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    page = ('intro\n```python\nprint(1)\n```\n\n```text\n1\n```\n```bash\nls\n```\n'
            '```python\nx = 2\n```\ntext\n```text\n2\n```\n')
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


# Planning labels: the item codes of the project's Objax 1.8 behaviour list and the tracker's issue numbers mean
# nothing to a reader of the code or the docs, so comments, docstrings and pages say what the behaviour is instead.
_CODE = r'(?:B[1-3]|V[1-5]|N[1-4]|R1|T[1-6]|L[13]|F[13]|I1|O1|IO[1-4]|U[1-3]|P1|Z[1-3])'  # L2 is also a norm
_LABELS = [re.compile(p) for p in (
    r'\b(?:[Dd]ecision|[Ss]pec|[Ii]tem)s? (?:items? )?[A-Z]{1,2}[0-9]\b',  # decision B2, Spec I1, spec item E1
    r'\b[Ss]pec items? [A-Z]\b|\bitems? [A-Z]\d?(?:, [A-Z]\d?)+\b',  # spec item E, items Z1, Z2, F
    r'\b[Ii]ssues? #?[0-9]+\b',  # issue 11, Issue 12, issue 11.13
    r'\b[Dd]one-when\b',  # done-when bullet 2 (not "done when", which is English)
    r'objax18_behaviour\.md,? (?:items? )?[A-Z]{1,2}[0-9]?\b',  # objax18_behaviour.md R1
    r'^\s*# [A-Z]{1,2}[0-9]?(?:[ ,/-]+[A-Z]{1,2}[0-9]?)* -{3,}',  # a section divider named by a code: # V2 -----
    r'^\s*# -{3,} [A-Z]{1,2}[0-9]?:',  # the same, title last: # ----- T1: writes inside gradients
    rf'\({_CODE}(?:\s*[,/]\s*(?:{_CODE}|[A-Z]))*\)',  # a bare code in parentheses: (B3), (O1, N4), (Z3/H)
    rf'(?:^|[\s(;"]){_CODE}(?:/[A-Z][0-9]?)?(?: \([a-z]\))?: ',  # a code as a lead-in: """B3: ..., P1 (a): ...
    rf'\*\*{_CODE}\. ',  # a code heading a paragraph: **B1. Reading a variable ...**
    rf'\b{_CODE}(?:\s*[-,/]\s*{_CODE})+\b(?!.* = )',  # a list of codes: V2-V5, N1, N3 (not B1, B2 = betas)
    rf'\b(?:{_CODE}|[E-K]) (?:applies|test_[a-z])',  # B1 applies; an audit entry: J test_compat_core
    r'\([Ii]ssue:',  # (issue: model-building toolkit)
)]
_LABEL_SUFFIXES = {'.py', '.md', '.txt', '.toml', '.yml', '.yaml', '.cfg'}


def planning_labels(path):
    """The lines of `path` that name a planning label, as 'path:line: text'."""
    found = []
    for number, line in enumerate(Path(path).read_text(encoding='utf-8').splitlines(), 1):
        if any(p.search(line) for p in _LABELS):
            found.append(f'{path}:{number}: {line.strip()}')
    return found


def _label_files():
    this = Path(__file__).resolve()  # its patterns and planted examples above are labels on purpose
    for top in (ROOT / 'src' / 'objax', ROOT / 'tests', ROOT / 'docs', ROOT / 'benchmarks', ROOT / 'examples'):
        yield from sorted(p for p in top.rglob('*') if p.suffix in _LABEL_SUFFIXES and p.is_file() and p != this)
    yield ROOT / 'README.md'


def test_no_planning_labels(tmp_path):
    """No comment, docstring or page refers to a spec item or a tracker issue by its code; say what it is."""
    d, s, i = 'decision', 'Spec', 'issue'  # built from pieces so that this file does not flag itself
    planted = [f'# Strictness is dropped ({d} B3).', f'    # {s} L3: the bias first.', f'"""Empty batches ({i} 11.',
               f'# V2 {"-" * 20}', f'# {"-" * 20} T1: writes inside gradients', '    """O1: step first."""',
               '"""P1 (a): split on axis 0."""', '# accepted (B3)', '# names (O1, N4)', f'"""{s} Z3/H: no state."""',
               f'"""As in 1.8 ({i} 10, done-when bullet 2)."""', '"""(objax18_behaviour.md R1)."""',
               f'"""VGG19 ({s.lower()} item E): names."""', '**B1. Reading a variable missing.**',
               '"""The core (V2-V5, N1, N3)."""', 'Audit: J test_compat_core; L1 test_nn_dropout.',
               '# retraces (explicit collection: B1 applies)', f'"""Trains a CNN ({i}: model toolkit)."""']
    genuine = ["help='weight decay (L2 penalty on weights)'", '# the L2 norm (L2) of the gradient',
               '"""(also done when the object is garbage collected)."""', 'class ResNetV2Block(Module):',
               'B1, B2, EPS = 0.9, 0.999, 1e-8', 'lr = LR * (1 - B2 ** t) / (1 - B1 ** t)',
               "(np.array(['a']), TypeError, 'got an array of dtype <U1')", "- A spec can be given: P(None, 'model').",
               'x = PartitionSpec(None, "model")  # spec of w', "f'Keras {arch}V2 weights layer by layer'"]
    sample = tmp_path / 'sample.py'
    sample.write_text('\n'.join(planted + genuine) + '\n')
    assert planning_labels(sample) == [f'{sample}:{n}: {line.strip()}' for n, line in enumerate(planted, 1)]

    offending = [line for path in _label_files() for line in planning_labels(path)]
    assert not offending, 'planning labels (say what the behaviour is instead):\n' + '\n'.join(offending)
