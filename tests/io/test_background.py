"""The threads of a background save at idle priority (objax.io._background)."""

import os
import threading

import pytest

from objax.io._background import python_threads, to_idle

pytestmark = pytest.mark.skipif(not hasattr(os, 'SCHED_IDLE'), reason='the idle priority is a Linux policy')


def _threads(n: int, stop: threading.Event, children: int = 0) -> list:
    """n started threads that wait for `stop`, each having started `children` threads of its own first."""
    started = []

    def run():
        for _ in range(children):
            started.extend(_threads(1, stop))
        stop.wait(60)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    return threads + started


def test_threads_started_since_the_snapshot_move_to_idle_and_the_others_stay():
    stop = threading.Event()
    try:
        old = _threads(2, stop)
        before = python_threads()
        new = _threads(3, stop)
        assert to_idle(before) >= 3
        assert {os.sched_getscheduler(t.native_id) for t in new} == {os.SCHED_IDLE}
        assert {os.sched_getscheduler(t.native_id) for t in old} == {os.SCHED_OTHER}
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the calling thread stays
        later = []
        probe = threading.Thread(target=lambda: later.extend(_threads(1, stop)))  # started by a normal thread
        probe.start()
        probe.join()
        assert os.sched_getscheduler(later[0].native_id) == os.SCHED_OTHER
    finally:
        stop.set()


def test_threads_started_by_a_moved_thread_inherit_idle_priority():
    stop, go, made = threading.Event(), threading.Event(), []

    def parent():
        go.wait(60)
        made.extend(_threads(1, stop))
        stop.wait(60)

    before = python_threads()
    t = threading.Thread(target=parent)
    t.start()
    try:
        to_idle(before)
        go.set()
        while not made:
            stop.wait(0.01)
        assert os.sched_getscheduler(made[0].native_id) == os.SCHED_IDLE
    finally:
        stop.set()
        go.set()
        t.join()
