"""Runs examples/train_sharded.py as two processes of 2 CPU devices (jax.distributed, gloo on 127.0.0.1): trains,
stops both at one step when one of them gets SIGTERM, and resumes exactly. The one-process runs of the example
are in test_programs.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _workers import free_port  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'train_sharded.py'
TINY = ('--width', 32, '--depth', 1, '--heads', 4, '--seq', 8, '--batch', 16, '--steps', 3)


def _accuracy(stdout: str) -> float:
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'Next-token accuracy: (\d+\.\d\d)% on 1536 held-out tokens', last)
    assert match, f'last line is not the final metric: {last!r}'
    return float(match.group(1)) / 100


def _two_processes(tmp_path, logdir, *args, signal_1: str = '') -> list:
    """Runs the example as 2 processes of 2 CPU devices each (jax.distributed, gloo on 127.0.0.1); `signal_1` is
    OBJAX_EXAMPLE_TEST_SIGNAL for process 1 only. Returns [(exit status, output)] of both processes."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
    env.update(XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLE.parent.parent / 'src'), env.get('PYTHONPATH', '')])
    logs = [open(tmp_path / f'log{i}.txt', 'w+') for i in range(2)]
    command = [sys.executable, EXAMPLE, '--mesh', 'data=4', '--logdir', logdir, *TINY, *args,
               '--coordinator', f'127.0.0.1:{port}', '--num-processes', 2]
    procs = [subprocess.Popen([str(a) for a in command + ['--process-id', i]], stdout=logs[i],
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(env, OBJAX_EXAMPLE_TEST_SIGNAL=signal_1) if i == 1 and signal_1 else env)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = []
    for f in logs:
        f.seek(0)
        out.append(f.read().replace('\r', '\n'))
        f.close()
    return list(zip(codes, out))


@pytest.mark.slow
def test_two_processes_stop_together_on_sigterm_and_resume_exactly(tmp_path):
    # The example imports objax at the top and calls jax.distributed.initialize() in main(), as every multi-host
    # script does: that only works if importing objax touches no device.
    reference = _two_processes(tmp_path, tmp_path / 'run', '--epochs', 1, '--steps', 6)
    assert [code for code, _ in reference] == [0, 0], '\n---\n'.join(o[-3000:] for _, o in reference)
    assert "Mesh {'data': 4} over 4 devices (2 processes)" in reference[0][1]
    _accuracy(reference[0][1].strip().rsplit('\n', 1)[-1] + '\n')
    assert sorted(os.listdir(tmp_path / 'run' / 'sharded')) == ['6']

    # SIGTERM reaches process 1 only (in step 2): JAX's preemption service makes both save at the same step and
    # exit 0; started again, they end with the variables of the uninterrupted run.
    stopped = _two_processes(tmp_path, tmp_path / 'again', '--epochs', 1, '--steps', 6, signal_1='TERM@2')
    assert [code for code, _ in stopped] == [0, 0], '\n---\n'.join(o[-3000:] for _, o in stopped)
    step = int(re.search(r'Stopping after (\d) steps', stopped[0][1]).group(1))
    assert 2 <= step < 6 and os.listdir(tmp_path / 'again' / 'sharded') == [str(step)]
    assert 'Variables' not in stopped[0][1] + stopped[1][1]
    final = _two_processes(tmp_path, tmp_path / 'again', '--epochs', 1, '--steps', 6)
    assert [code for code, _ in final] == [0, 0], '\n---\n'.join(o[-3000:] for _, o in final)
    assert f': {step} steps done (' in final[0][1]

    def digest(out):
        return re.search(r'Variables: sha256 (\w+)', out).group(1)
    assert digest(final[0][1]) == digest(reference[0][1])
