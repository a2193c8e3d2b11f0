"""Launching the worker processes of the multi-process tests (jax.distributed over gloo on 127.0.0.1)."""

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, List

__all__ = ['free_port', 'port_is_free', 'run_workers']


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no program holds right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound (no worker left holding it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def _tail(path: str) -> str:
    with open(path, errors='replace') as f:
        return f.read()[-3000:]


def _stop(procs):
    """Kills every worker still running (whole process group) and reaps it."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_workers(script: str, nproc: int, port: int, logdir, last_arg: Callable[[int], str], timeout_s: float) -> str:
    """Runs `python script <i> <nproc> <port> <last_arg(i)>` for each process i to completion, with this
    checkout's src/ first on the path and no XLA_FLAGS/JAX_PLATFORMS inherited. Returns '' when all succeeded,
    else what went wrong with the failing worker's log. A worker that fails ends the run at once; every worker
    is killed and reaped before it returns, whatever happened."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
    env['PYTHONPATH'] = os.pathsep.join([os.path.join(os.path.dirname(__file__), '..', 'src'),
                                         env.get('PYTHONPATH', '')])
    logs: List[str] = [os.path.join(str(logdir), f'log{i}.txt') for i in range(nproc)]
    procs = []
    try:
        for i in range(nproc):
            with open(logs[i], 'w') as log:
                procs.append(subprocess.Popen([sys.executable, script, str(i), str(nproc), str(port), last_arg(i)],
                                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            failed = [(p.returncode, log) for p, log in zip(procs, logs) if p.poll() not in (None, 0)]
            if failed:
                return f'worker exited with {failed[0][0]}:\n{_tail(failed[0][1])}'
            if time.monotonic() > deadline:
                return f'workers timed out after {timeout_s}s:\n' + '\n'.join(_tail(log) for log in logs)
            time.sleep(0.2)
        bad = [(p.returncode, log) for p, log in zip(procs, logs) if p.returncode]
        return f'worker exited with {bad[0][0]}:\n{_tail(bad[0][1])}' if bad else ''
    finally:
        _stop(procs)
