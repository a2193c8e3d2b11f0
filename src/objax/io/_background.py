"""The threads that write a checkpoint in the background, moved to the operating system's idle priority.

On a machine whose processors also train, a background save takes its processor time from the training steps.
At idle priority (Linux's SCHED_IDLE) its threads run only when a processor has nothing else to do: the save
takes longer and training is slowed less.
"""

import os
import threading
from typing import Set

__all__ = ['python_threads', 'to_idle']

_TENSORSTORE_PREFIX = 'ts_'  # tensorstore names its worker threads ts_pool_worker...


def python_threads() -> Set[int]:
    """The native ids of the running Python threads."""
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def _tensorstore_threads() -> Set[int]:
    """The native ids of tensorstore's worker threads in this process (none where /proc is missing)."""
    found = set()
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                if f.read().startswith(_TENSORSTORE_PREFIX):
                    found.add(int(tid))
        except OSError:  # ended meanwhile
            continue
    return found


def to_idle(before: Set[int]) -> int:
    """Moves the Python threads started since `before` (see python_threads) and tensorstore's worker threads to
    idle priority; the threads they start later inherit it. Threads that those start meanwhile are moved too (the
    threads are listed again until no new one is found). Does nothing where the system has no idle priority.

    Args:
        before: the native ids of the Python threads to leave as they are.

    Returns:
        How many threads were moved.
    """
    if not hasattr(os, 'SCHED_IDLE'):
        return 0
    keep = set(before) | {threading.main_thread().native_id, threading.get_native_id()}
    seen = set()
    moved = 0
    while True:
        todo = ((python_threads() - keep) | _tensorstore_threads()) - seen
        if not todo:
            return moved
        for tid in todo:
            try:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                moved += 1
            except OSError:  # ended meanwhile, or not allowed
                pass
        seen |= todo
