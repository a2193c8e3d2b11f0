"""Runs examples/train_sharded.py as several processes: two processes of 2 CPU devices (jax.distributed, gloo on
127.0.0.1) train, stop together when one of them gets SIGTERM, and resume exactly; launched by Open MPI's mpirun
(2 x 4 devices) it trains to the same variables as one process with 8 devices. The one-process runs of the
example are in test_programs.py."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _workers import free_port  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'train_sharded.py'
TINY = ('--width', 32, '--depth', 1, '--heads', 4, '--seq', 8, '--batch', 16, '--steps', 3)


def _run(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the example as one process on 8 CPU devices."""
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu',
               OBJAX_COMPILE_CACHE='off')
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLE.parent.parent / 'src'), env.get('PYTHONPATH', '')])
    out = subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=400)
    if check:
        assert out.returncode == 0, f'{args} failed:\n{out.stdout}\n{out.stderr[-3000:]}'
    return out


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


def _state(logdir) -> dict:
    """The variables of the example's model (TINY sizes) and Adam, restored from the newest checkpoint in logdir
    (written by objax.util.TrainingRun, which restores its own entries too)."""
    sys.path.insert(0, str(EXAMPLE.parent))
    from train_sharded import TransformerLM

    import objax
    model = TransformerLM(vocab=32, seq=8, width=32, depth=1, heads=4)
    vc = model.vars() + objax.optimizer.Adam(model.vars()).vars()
    with objax.util.TrainingRun(logdir, vc, epochs=1, steps_per_epoch=3, sharded=True, verbose=False) as run:
        assert run.global_step == 3
    return {k: np.asarray(v.value) for k, v in vc.items()}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which('mpirun') is None,
                    reason='mpirun is not installed (Open MPI: apt-get install openmpi-bin)')
def test_mpirun_two_processes_train_as_one_process_with_8_devices(tmp_path):
    # Unchanged command line: the example sees OMPI_COMM_WORLD_SIZE and jax.distributed.initialize() reads the
    # coordinator address, process count and index from Open MPI's environment. 2 processes x 4 CPU devices.
    single = _run('--mesh', 'data=8', '--logdir', tmp_path / 'single', '--epochs', 1, *TINY)
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
    env.update(XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
               JAX_COORDINATOR_PORT=str(free_port()),  # else one derived from the job id, which may be taken
               OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')  # CI containers run as root
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLE.parent.parent / 'src'), env.get('PYTHONPATH', '')])
    # mpirun's own address (hence the coordinator's) on 127.0.0.1: the test needs no network interface.
    command = ['mpirun', '-np', '2', '--oversubscribe', '--mca', 'oob_tcp_if_include', 'lo',
               '-x', 'XLA_FLAGS', '-x', 'JAX_PLATFORMS', '-x', 'PYTHONPATH', '-x', 'JAX_COORDINATOR_PORT',
               sys.executable, str(EXAMPLE), '--mesh', 'data=8',
               '--logdir', str(tmp_path / 'mpi'), '--epochs', '1', *map(str, TINY)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, f'{out.stdout[-3000:]}\n{out.stderr[-3000:]}'
    assert "Mesh {'data': 8} over 8 devices (2 processes)" in out.stdout
    assert _accuracy(out.stdout) == _accuracy(single.stdout)
    mpi, one = _state(tmp_path / 'mpi'), _state(tmp_path / 'single')
    assert mpi.keys() == one.keys()
    # The same program on the same 8-way mesh; only the order in which the all-reduces add the devices' terms
    # differs (gloo between the processes): float32 rounding, a few units in the last place after 3 steps.
    diffs = {k: float(np.abs(mpi[k].astype(np.float64) - v).max()) for k, v in one.items()}
    assert max(diffs.values()) < 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    for k, v in one.items():
        np.testing.assert_allclose(mpi[k], v, rtol=1e-4, atol=1e-7, err_msg=k)
