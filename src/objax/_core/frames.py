"""Per-thread bookkeeping of the transforms while they run a function (used by variable.py and _state.py).

While a transform runs its function, the variables of its collection hold the values the transform gave
them (tracers under Jit, batched values under Vectorize...). Those values live in a *frame* of this thread,
never in the variables' own storage, so other threads keep seeing the real values. Reads and writes of a
variable look through the frames of the current thread, innermost first.

A compiled transform (Jit, Parallel) marks its frame `compiled`: a read of a variable that is in none of the
frames up to it freezes the variable's value into the compiled program (as Objax 1.8 did) and warns once per
compiled function and variable; a write to such a variable raises VariableOutsideCollectionError.
"""

import threading
import warnings
from typing import Callable, Dict, Optional, Set

__all__ = ['VariableOutsideCollectionError', 'VariableOutsideCollectionWarning']


class VariableOutsideCollectionError(ValueError):
    """A compiled transform's function wrote a variable that is not in the collection it was given."""


class VariableOutsideCollectionWarning(UserWarning):
    """A compiled transform's function read a variable that is not in its collection: its value is frozen."""


MISSING = object()  # "this variable has no value in the frames": use its own storage


class Frame:
    """Values of the variables of one running transform, keyed by id of the variable holding the data.

    Args:
        values: {id(variable): value}; changed in place by writes.
        owner: label of a compiled transform (e.g. 'Jit(train_op)'), None for the others.
        warned: ids of the variables already warned about (kept by the transform across traces).
        describe: best-effort name of a variable, for messages.
    """
    __slots__ = ('values', 'owner', 'warned', 'describe', 'created')

    def __init__(self, values: Dict[int, object], owner: Optional[str] = None, warned: Optional[Set[int]] = None,
                 describe: Optional[Callable[[object], Optional[str]]] = None):
        self.values = values
        self.owner = owner
        self.warned = set() if warned is None else warned
        self.describe = describe
        self.created: Set[int] = set()  # variables created while the frame is active use their own storage

    def _label(self, var) -> str:
        name = None
        if self.describe is not None:
            try:
                name = self.describe(var)
            except Exception:  # naming is best effort, the message is what matters
                name = None
        return f'"{name}" ({var!r})' if name else repr(var)

    def outside_read(self, var):
        if id(var) in self.warned:
            return
        self.warned.add(id(var))
        transform = self.owner.split('(')[0]
        warnings.warn(f'{self.owner} reads variable {self._label(var)}, which is not in the VarCollection it was '
                      f'given: its current value is frozen into the compiled function and later changes to it '
                      f'are not seen. Add it to the collection passed to {transform} (for example '
                      f'`vc = model.vars() + other.vars()`).', VariableOutsideCollectionWarning, stacklevel=4)

    def outside_write(self, var) -> VariableOutsideCollectionError:
        transform = self.owner.split('(')[0]
        return VariableOutsideCollectionError(
            f'{self.owner} writes variable {self._label(var)}, which is not in the VarCollection it was given: '
            f'the write would be lost (or leave a tracer in the variable). Nothing was changed. Add it to the '
            f'collection passed to {transform} (for example `vc = model.vars() + other.vars()`).')


class Loan:
    """Stands in a variable's storage while a donating call has lent its value to a compiled program (see
    _state.Pure.lend): other threads reading or writing the variable wait until the new value is stored."""
    __slots__ = ('lock', 'thread', 'values', 'index')

    def __init__(self, index: Dict[int, int]):
        self.lock = threading.Lock()  # held from lend to repay
        self.thread = None  # the lending thread
        self.values = None  # the lent values
        self.index = index  # id(variable) -> position in values

    def wait(self, var):
        """The lent value when called from the lending thread; else waits for the repayment and returns
        MISSING (read the storage again)."""
        if self.thread == threading.get_ident():
            return self.values[self.index[id(var)]]
        with self.lock:
            pass
        return MISSING

    def __repr__(self):
        return '<value being updated by a compiled call>'


class _Local(threading.local):
    def __init__(self):
        self.frames = []


LOCAL = _Local()


def lookup(var):
    """The value `var` (a variable holding data) has in this thread's frames, or MISSING (use its storage)."""
    key = id(var)
    for frame in reversed(LOCAL.frames):
        x = frame.values.get(key, MISSING)
        if x is not MISSING:
            return x
        if key in frame.created:
            return MISSING
        if frame.owner is not None:
            frame.outside_read(var)
    return MISSING


def store(var, x) -> bool:
    """Writes x as `var`'s value in the innermost frame that has it; False when no frame has it (write the
    storage). Raises VariableOutsideCollectionError when a compiled frame is met first."""
    key = id(var)
    for frame in reversed(LOCAL.frames):
        if key in frame.values:
            frame.values[key] = x
            return True
        if key in frame.created:
            return False
        if frame.owner is not None:
            raise frame.outside_write(var)
    return False


def allow(var) -> None:
    """A variable created inside a running transform belongs to it (it did not exist before the call)."""
    frames = LOCAL.frames
    if frames:
        frames[-1].created.add(id(var))
