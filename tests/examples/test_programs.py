"""Runs each program of examples/ briefly in a subprocess (tiny sizes, few epochs) so that they cannot rot:
exit status, final metric line, checkpoints, resuming, TensorBoard events, progress bar, data errors; and exact
resuming: each training example stopped by SIGTERM, then killed by SIGKILL mid-epoch, then run again with the same
command ends with the variables (a sha256 of all of them, printed), the final lines and the TensorBoard scalars
of a run never interrupted. The signals come from the examples' test-only hook OBJAX_EXAMPLE_TEST_SIGNAL=SIG@k
(examples/common.py: the run sends itself SIG during step k)."""

import glob
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


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


def _ending(stdout: str) -> list:
    """The lines printed after training ('Variables: sha256 ...', the final metric...)."""
    return stdout.split('Compile time: ')[1].splitlines()[1:]


def _interrupt_and_resume(run, script: str, logdir: Path, args: tuple, term_at: int, kill_at: int, resumed_at: int,
                          devices: int = 1):
    """Runs `script --logdir logdir *args` three times: stopped by SIGTERM during step term_at (it saves and
    exits 0), killed by SIGKILL during step kill_at, then to the end, resuming from checkpoint `resumed_at`.
    Returns the last run."""
    stopped = run(script, '--logdir', logdir, *args, devices=devices, OBJAX_EXAMPLE_TEST_SIGNAL=f'TERM@{term_at}')
    assert f'Stopping after {term_at} steps' in stopped.stdout and 'Variables' not in stopped.stdout
    killed = run(script, '--logdir', logdir, *args, devices=devices, check=False,
                 OBJAX_EXAMPLE_TEST_SIGNAL=f'KILL@{kill_at}')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert f'Resuming from {logdir}' in killed.stdout and f': {term_at} steps done (' in killed.stdout
    final = run(script, '--logdir', logdir, *args, devices=devices)
    assert f'Resuming from {logdir}' in final.stdout and f': {resumed_at} steps done (' in final.stdout
    return final


def _same_run(a: Path, b: Path, tags=('losses/xe', 'accuracy/test', 'lr')):
    for tag in tags:
        assert _scalars(a, tag) == _scalars(b, tag), tag


def test_classify_digits_trains_logs_and_resumes(tmp_path, run):
    first = run('classify_digits.py', '--logdir', tmp_path, '--epochs', 2)
    accuracy = _accuracy(first.stdout)
    assert accuracy >= 0.9  # two epochs of the default CNN; chance is 0.1
    assert 'Resuming' not in first.stdout and 'digits: 100%' in first.stderr  # tqdm bar on stderr
    assert _checkpoints(tmp_path) == ['0000000022.npz', '0000000044.npz']  # indexed by step: 22 per epoch
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

    # 22 steps per epoch, saved every 8: stopped after step 5, killed in step 19, resumed from step 16 (epoch 1).
    final = _interrupt_and_resume(run, 'classify_digits.py', tmp_path / 'again', ('--epochs', 2, '--save-every', 8),
                                  term_at=5, kill_at=19, resumed_at=16)
    assert _ending(final.stdout) == _ending(first.stdout)
    _same_run(tmp_path, tmp_path / 'again')

    second = run('classify_digits.py', '--logdir', tmp_path, '--epochs', 3)
    assert f'Resuming from {tmp_path / "ckpt" / "0000000044.npz"}: 44 steps done (epoch 2, step 0)' in second.stdout
    assert 'Trained epochs 3-3' in second.stdout and _accuracy(second.stdout) >= 0.9
    assert _checkpoints(tmp_path) == ['0000000044.npz', '0000000066.npz']  # keeps the newest two
    assert [s for s, _ in _scalars(tmp_path, 'accuracy/test')] == [1, 2, 3]
    assert [s for s, _ in _scalars(tmp_path, 'lr')] == [1, 2, 3] and [s for s, _ in _texts(tmp_path, 'model')] == [0, 2]


def test_dp_digits_prints_epsilon_and_resumes(tmp_path, run):
    args = ('--logdir', tmp_path, '--batch', 32, '--noise', 1.0)
    first = run('dp_digits.py', *args, '--epochs', 1)
    _accuracy(first.stdout)
    # 1437 training digits, batch 32: 44 steps at q = 32/1437, independently of the accountant's own tests.
    assert 'epsilon = ' in first.stdout and '(44 steps, sampling ratio 0.0223, noise multiplier 1.0' in first.stdout
    # The accountant's record comes back with the weights, the optimizer and the noise generator's key.
    final = _interrupt_and_resume(run, 'dp_digits.py', tmp_path / 'again',
                                  args[2:] + ('--epochs', 1, '--save-every', 10), term_at=7, kill_at=33, resumed_at=30)
    assert _ending(final.stdout) == _ending(first.stdout) and '(44 steps' in final.stdout
    _same_run(tmp_path, tmp_path / 'again', ('losses/xe', 'accuracy/test', 'privacy/epsilon'))

    second = run('dp_digits.py', *args, '--epochs', 2)
    assert 'Resuming from' in second.stdout and '(88 steps' in second.stdout
    eps = [float(re.search(r'epsilon = ([\d.]+)', o.stdout).group(1)) for o in (first, second)]
    assert 0 < eps[0] < eps[1]  # more steps spend more privacy
    assert _accuracy(second.stdout) > 0.3  # learning despite clipping and noise (chance is 0.1)
    logged = _scalars(tmp_path, 'privacy/epsilon')
    assert [s for s, _ in logged] == [1, 2]
    assert [v for _, v in logged] == pytest.approx(eps, abs=0.006)
    assert _checkpoints(tmp_path) == ['0000000044.npz', '0000000088.npz']


def test_image_classification_parallel_synthetic_resumes(tmp_path, run):
    args = ('--logdir', tmp_path, '--depth', 10, '--width', 1, '--batch', 16, '--synthetic-size', 64,
            '--image-size', 8, '--augment')
    first = run('image_classification.py', *args, '--epochs', 1, devices=2)
    assert '64 training and 16 test images of shape (3, 8, 8), 4 classes, 2 device(s)' in first.stdout
    _accuracy(first.stdout)
    assert _checkpoints(tmp_path) == ['0000000004.npz']
    # The generator of the batches and augmentations comes back too: 4 steps, saved every 2.
    final = _interrupt_and_resume(run, 'image_classification.py', tmp_path / 'again', args[2:] + ('--epochs', 1,
                                  '--save-every', 2), term_at=1, kill_at=3, resumed_at=2, devices=2)
    assert _ending(final.stdout) == _ending(first.stdout)
    _same_run(tmp_path, tmp_path / 'again')

    second = run('image_classification.py', *args, '--epochs', 2, devices=2)
    assert 'Resuming from' in second.stdout and '4 steps done (epoch 1, step 0)' in second.stdout
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


def test_train_sharded_trains_resumes_exactly_and_on_another_mesh(tmp_path, run):
    """The sharded example (ShardedCheckpoint) on 8 devices: a 2x4 (data, model) mesh, 6 steps in 2 epochs saved
    every 2, then resumed on an 8-way FSDP mesh."""
    tiny = ('--width', 32, '--depth', 1, '--heads', 4, '--seq', 8, '--batch', 16, '--steps', 3, '--save-every', 2)
    first = run('train_sharded.py', '--mesh', 'data=2,model=4', '--logdir', tmp_path, '--epochs', 2, *tiny, devices=8)
    assert "Mesh {'data': 2, 'model': 4} over 8 devices (1 processes)" in first.stdout
    last = first.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r'Next-token accuracy: \d+\.\d\d% on 1536 held-out tokens', last), last
    assert 'lm: 100%' in first.stderr  # tqdm bar on stderr
    assert sorted(os.listdir(tmp_path / 'sharded')) == ['4', '6']  # indexed by step: 3 per epoch, saved every 2
    assert [s for s, _ in _scalars(tmp_path, 'losses/xe')] == [1, 2]

    final = _interrupt_and_resume(run, 'train_sharded.py', tmp_path / 'again',
                                  ('--mesh', 'data=2,model=4', '--epochs', 2, *tiny), term_at=1, kill_at=5,
                                  resumed_at=4, devices=8)
    assert _ending(final.stdout) == _ending(first.stdout)
    _same_run(tmp_path, tmp_path / 'again')

    second = run('train_sharded.py', '--mesh', 'data=8', '--logdir', tmp_path, '--epochs', 3, *tiny, devices=8)
    assert f'Resuming from {tmp_path / "sharded" / "6"}: 6 steps done (epoch 2, step 0)' in second.stdout
    assert 'Trained epochs 3-3' in second.stdout and 'Next-token accuracy' in second.stdout
    assert sorted(os.listdir(tmp_path / 'sharded')) == ['8', '9']

    bad = run('train_sharded.py', '--mesh', 'data=3', '--logdir', tmp_path, *tiny, devices=8, check=False)
    assert bad.returncode == 2 and 'need 3 devices, there are 8' in bad.stderr
