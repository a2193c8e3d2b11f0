"""Runs each program of examples/ briefly in a subprocess (tiny sizes, few epochs) so that they cannot rot:
exit status, final metric line, checkpoints, resuming, TensorBoard events, progress bar, data errors."""

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'


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
        env.update(extra_env)
        out = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                             text=True, env=env, timeout=300)
        if check:
            assert out.returncode == 0, f'{script} {args} failed:\n{out.stdout}\n{out.stderr[-3000:]}'
        return out

    return run_example


def _accuracy(stdout: str) -> float:
    """The fraction printed on the final 'Test accuracy: xx.xx%' line (which must be the last line)."""
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'Test accuracy: (\d+\.\d\d)% .*', last)
    assert match, f'last line is not the final metric: {last!r}'
    return float(match.group(1)) / 100


def _checkpoints(logdir: Path) -> list:
    return sorted(os.path.basename(p) for p in glob.glob(str(logdir / 'ckpt' / '*.npz')))


def _scalars(logdir: Path, tag: str) -> list:
    """(step, value) of every `tag` scalar in the TensorBoard event files of logdir/tb."""
    out = []
    for path in sorted(glob.glob(str(logdir / 'tb' / 'events.out.tfevents.*'))):
        events = EventAccumulator(path)
        events.Reload()
        out += [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()['scalars'] else []
    return sorted(out)


def _texts(logdir: Path, tag: str) -> list:
    """(step, text) of every `tag` text summary in the TensorBoard event files of logdir/tb."""
    out = []
    for path in sorted(glob.glob(str(logdir / 'tb' / 'events.out.tfevents.*'))):
        events = EventAccumulator(path)
        events.Reload()
        if tag in events.Tags()['tensors']:
            assert events.SummaryMetadata(tag).plugin_data.plugin_name == 'text'
            out += [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]
    return sorted(out)


def test_classify_digits_trains_logs_and_resumes(tmp_path, run):
    first = run('classify_digits.py', '--logdir', tmp_path, '--epochs', 2)
    accuracy = _accuracy(first.stdout)
    assert accuracy >= 0.9  # two epochs of the default CNN; chance is 0.1
    assert 'Resuming' not in first.stdout and 'digits: 100%' in first.stderr  # tqdm bar on stderr
    assert _checkpoints(tmp_path) == ['0000000001.npz', '0000000002.npz']
    logged = _scalars(tmp_path, 'accuracy/test')
    assert [s for s, _ in logged] == [1, 2] and logged[-1][1] == pytest.approx(accuracy, abs=0.006)
    assert [s for s, _ in _scalars(tmp_path, 'losses/xe')] == [1, 2]
    # The learning rate, cosine-decayed from 3e-3 to 0 over the 2 epochs: the mean of each epoch's steps.
    lr = _scalars(tmp_path, 'lr')
    assert [s for s, _ in lr] == [1, 2] and 3e-3 > lr[0][1] > 1.5e-3 > lr[1][1] > 0
    [(step, table)] = _texts(tmp_path, 'model')  # objax.util.summary of the model, a Markdown code block
    lines = table.splitlines()
    assert step == 0 and all(line.startswith('    ') for line in lines)
    assert lines[0].split() == ['Module', 'Parameters', 'State', 'Bytes'] and '(Sequential)' in lines[2]
    # 3 conv (w, b) + 3 batch norms (4 variables each) + linear; 32 filters: 320 + 9,248 + 18,496 + 2,570 + 2 * 64
    # + 128 parameters
    assert lines[-1].split()[:4] == ['Total', '(20', 'variables)', '30,890']

    second = run('classify_digits.py', '--logdir', tmp_path, '--epochs', 3)
    assert f'Resuming from {tmp_path / "ckpt" / "0000000002.npz"}: 2 of 3 epochs done' in second.stdout
    assert 'Trained epochs 3-3' in second.stdout and _accuracy(second.stdout) >= 0.9
    assert _checkpoints(tmp_path) == ['0000000002.npz', '0000000003.npz']  # keeps the newest two
    assert [s for s, _ in _scalars(tmp_path, 'accuracy/test')] == [1, 2, 3]
    assert [s for s, _ in _scalars(tmp_path, 'lr')] == [1, 2, 3] and [s for s, _ in _texts(tmp_path, 'model')] == [0, 2]


def test_dp_digits_prints_epsilon_and_resumes(tmp_path, run):
    args = ('--logdir', tmp_path, '--batch', 32, '--noise', 1.0)
    first = run('dp_digits.py', *args, '--epochs', 1)
    _accuracy(first.stdout)
    # 1437 training digits, batch 32: 44 steps at q = 32/1437, independently of the accountant's own tests.
    assert 'epsilon = ' in first.stdout and '(44 steps, sampling ratio 0.0223, noise multiplier 1.0' in first.stdout
    second = run('dp_digits.py', *args, '--epochs', 2)
    assert 'Resuming from' in second.stdout and '(88 steps' in second.stdout
    eps = [float(re.search(r'epsilon = ([\d.]+)', o.stdout).group(1)) for o in (first, second)]
    assert 0 < eps[0] < eps[1]  # more steps spend more privacy
    assert _accuracy(second.stdout) > 0.3  # learning despite clipping and noise (chance is 0.1)
    logged = _scalars(tmp_path, 'privacy/epsilon')
    assert [s for s, _ in logged] == [1, 2]
    assert [v for _, v in logged] == pytest.approx(eps, abs=0.006)
    assert _checkpoints(tmp_path) == ['0000000001.npz', '0000000002.npz']


def test_image_classification_parallel_synthetic_resumes(tmp_path, run):
    args = ('--logdir', tmp_path, '--depth', 10, '--width', 1, '--batch', 16, '--synthetic-size', 64,
            '--image-size', 8, '--augment')
    first = run('image_classification.py', *args, '--epochs', 1, devices=2)
    assert '64 training and 16 test images of shape (3, 8, 8), 4 classes, 2 device(s)' in first.stdout
    _accuracy(first.stdout)
    assert _checkpoints(tmp_path) == ['0000000001.npz']
    second = run('image_classification.py', *args, '--epochs', 2, devices=2)
    assert 'Resuming from' in second.stdout and '1 of 2 epochs done' in second.stdout
    _accuracy(second.stdout)
    assert [s for s, _ in _scalars(tmp_path, 'losses/xe')] == [1, 2]
    assert [s for s, _ in _scalars(tmp_path, 'lr')] == [1, 2]
    texts = _texts(tmp_path, 'model')
    assert [s for s, _ in texts] == [0, 1] and texts[0][1].splitlines()[2].split()[0] == '(WideResNet)'
    # A batch that the devices cannot share is refused before anything runs.
    bad = run('image_classification.py', *args, '--batch', 15, devices=2, check=False)
    assert bad.returncode != 0 and 'multiple of the 2 devices' in bad.stderr


def test_image_classification_reads_npz(tmp_path, run):
    rng = np.random.default_rng(0)
    # NHWC uint8 images whose class is the brightest quadrant, with a separate test set.
    def make(n):
        y = rng.integers(0, 4, size=n)
        x = rng.integers(0, 100, size=(n, 8, 8, 3)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] += 150
        return x, y
    (x, y), (x_test, y_test) = make(96), make(24)
    data = tmp_path / 'quadrants.npz'
    np.savez(data, x=x, y=y, x_test=x_test, y_test=y_test)
    out = run('image_classification.py', '--data', data, '--logdir', tmp_path / 'run', '--depth', 10, '--width', 1,
               '--batch', 16, '--epochs', 3, '--lr', 0.02, devices=2)
    assert '96 training and 24 test images of shape (3, 8, 8), 4 classes, 2 device(s)' in out.stdout
    assert _accuracy(out.stdout) >= 0.75  # an easy task (chance is 0.25)

    np.savez(tmp_path / 'no_labels.npz', x=x)
    bad = run('image_classification.py', '--data', tmp_path / 'no_labels.npz', '--logdir', tmp_path / 'bad',
               check=False)
    assert bad.returncode != 0
    assert f"{tmp_path / 'no_labels.npz'}: missing key 'y'" in bad.stderr
    assert not (tmp_path / 'bad').exists()  # nothing was started


def _compile_stats(stdout: str):
    """(seconds, programs, cache hits) from the examples' 'Compile time: ...' line."""
    match = re.search(r'Compile time: ([\d.]+)s for (\d+) programs, (\d+) of them read from the persistent', stdout)
    assert match, stdout
    return float(match.group(1)), int(match.group(2)), int(match.group(3))


def test_second_run_reads_the_persistent_compilation_cache(tmp_path, run):
    """Persistent compilation cache: a second run of an example spends less than half the first run's compile time."""
    cache = tmp_path / 'cache'
    args = ('--epochs', 1, '--filters', 4)
    off = run('classify_digits.py', '--logdir', tmp_path / 'off', *args, '--no-compile-cache',
              OBJAX_COMPILE_CACHE=str(cache))
    assert not cache.exists() and _compile_stats(off.stdout)[2] == 0
    first = run('classify_digits.py', '--logdir', tmp_path / 'a', *args, OBJAX_COMPILE_CACHE=str(cache))
    seconds, programs, hits = _compile_stats(first.stdout)
    assert hits == 0 and programs > 0
    assert len(os.listdir(cache)) >= programs // 2  # the cache directory holds the compiled programs
    second = run('classify_digits.py', '--logdir', tmp_path / 'b', *args, OBJAX_COMPILE_CACHE=str(cache))
    seconds2, programs2, hits2 = _compile_stats(second.stdout)
    assert programs2 == programs and hits2 == programs
    assert seconds2 < 0.5 * seconds
    assert _accuracy(second.stdout) == _accuracy(first.stdout)  # same seed, same numbers


PRETRAINED = Path(__file__).resolve().parents[1] / 'data' / 'pretrained'


def test_generate_text_prints_the_greedy_tokens_of_transformers(run):
    reference = np.load(PRETRAINED / 'gpt2_tiny_reference.npz')
    prompts = [arg for row in reference['prompt'] for arg in ('--prompt-ids', ','.join(map(str, row)))]
    new = reference['greedy'].shape[1] - reference['prompt'].shape[1]
    out = run('generate_text.py', '--model', PRETRAINED / 'gpt2_tiny', *prompts, '--max-new-tokens', new)
    printed = [line[len('ids: '):] for line in out.stdout.splitlines() if line.startswith('ids: ')]
    assert printed == [','.join(map(str, row)) for row in reference['greedy']], out.stdout
    assert 'Loaded' in out.stdout and '20 tokens in' in out.stdout
    sampled = run('generate_text.py', '--model', PRETRAINED / 'gpt2_tiny', *prompts[:2], '--max-new-tokens', 4,
                  '--temperature', 1.5, '--seed', 1)
    assert sampled.stdout.count('ids: ') == 1
    refused = run('generate_text.py', '--model', PRETRAINED / 'gpt2_tiny', '--prompt', 'Hello', check=False)
    assert refused.returncode != 0 and 'give token ids with --prompt-ids' in refused.stderr


def test_generate_text_with_a_tokenizer(tmp_path, run):
    tokenizers = pytest.importorskip('tokenizers')
    reference = np.load(PRETRAINED / 'gpt2_tiny_reference.npz')
    folder = tmp_path / 'gpt2'
    shutil.copytree(PRETRAINED / 'gpt2_tiny', folder)
    words = {f'w{i}': i for i in range(128)}  # a word-level vocabulary: token i is the word 'w<i>'
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token='w0'))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / 'tokenizer.json'))
    new = reference['greedy'].shape[1] - reference['prompt'].shape[1]
    prompt = ' '.join(f'w{i}' for i in reference['prompt'][0])
    out = run('generate_text.py', '--model', folder, '--prompt', prompt, '--max-new-tokens', new)
    assert ' '.join(f'w{i}' for i in reference['greedy'][0]) in out.stdout.splitlines(), out.stdout
