"""Per-thread bookkeeping of the transforms while they run a function (used by variables.py and pure.py).

While a transform runs its function, the variables of its collection hold the values the transform gave
them (tracers under Jit, batched values under Vectorize...). Those values live in a *frame* of this thread,
never in the variables' own storage, so other threads keep seeing the real values. Reads and writes of a
variable look through the frames of the current thread, innermost first.

A compiled transform (Jit, Parallel) marks its frame `compiled`: a read of a variable that is in none of the
frames up to it freezes the variable's value into the compiled program (as Objax 1.8 did) and warns once per
compiled function and variable; a write to such a variable raises VariableOutsideCollectionError. The
transforms that run their function in place (Remat, Scan, Cond and the loops) mark their frame `open_reads`:
a read outside their collection looks through to the enclosing frames (or the variable's storage) instead,
while a write outside it still raises.

JAX's own transforms (jax.jit, grad, vmap, lax.scan, checkpoint...) know nothing of frames: a variable used
while one of them traces, outside any frame that holds it, keeps its value in a JAX array reference (see
refs.py). The same happens to a frame's value when a JAX transform nested inside an objax transform uses it:
the frame then holds a reference made at the frame's own trace level (FrameRef).
"""

import threading
import time
import warnings
from typing import Any, Callable, Dict, Optional, Set

import jax

from objax._core.refs import check_ref_context, current_trace, manual_axes, ref_get, ref_set, set_current_trace

__all__ = ['VariableOutsideCollectionError', 'VariableOutsideCollectionWarning', 'MISSING', 'FROZEN', 'Frame',
           'FrameRef', 'Loan', 'wait_while', 'LOCAL', 'remember', 'recall', 'lookup', 'store', 'allow']


class VariableOutsideCollectionError(ValueError):
    """A compiled transform's function wrote a variable that is not in the collection it was given."""


class VariableOutsideCollectionWarning(UserWarning):
    """A compiled transform's function read a variable that is not in its collection: its value is frozen."""


MISSING = object()  # "this variable has no value in the frames": use its own storage
FROZEN = object()  # "read outside the collection of a compiled transform": its concrete value is frozen in


class Frame:
    """Values of the variables of one running transform, keyed by id of the variable holding the data.

    Args:
        values: {id(variable): value}; changed in place by writes.
        owner: label of a compiled transform (e.g. 'Jit(train_op)'), None for the others.
        warned: ids of the variables already warned about (kept by the transform across traces).
        describe: best-effort name of a variable, for messages.
    """
    __slots__ = ('values', 'owner', 'warned', 'describe', 'created', 'trace', 'manual', 'differentiated',
                 'open_reads')

    def __init__(self, values: Dict[int, object], owner: Optional[str] = None, warned: Optional[Set[int]] = None,
                 describe: Optional[Callable[[object], Optional[str]]] = None):
        self.values = values
        self.owner = owner
        self.warned = set() if warned is None else warned
        self.describe = describe
        self.created: Set[int] = set()  # variables created while the frame is active use their own storage
        self.trace = current_trace(())  # the JAX trace the transform runs its function under
        self.manual = manual_axes()  # inside a shard_map body (objax.Parallel): its mesh axes
        self.differentiated = False  # the trainable values are differentiated (objax.Grad and co.)
        self.open_reads = False  # reads outside the collection look through to the enclosing frames (see above)

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


class FrameRef:
    """A frame's value kept in a JAX array reference made at the frame's trace level, because a JAX
    transformation nested inside the objax transform (e.g. jax.lax.scan inside Jit) used the variable.

    The reference of a trainable variable carries gradients (objax.Grad differentiates through what the nested
    transformation reads); that of a state is of kind STATE_KIND, as state stored outside any transform."""
    __slots__ = ('ref', 'manual', 'old', 'written')

    def __init__(self, frame: Frame, value, var):
        self.manual = frame.manual
        self.old = value  # the frame's value before, which stays its value unless `written`
        self.written = False
        with set_current_trace(frame.trace):
            self.ref = jax.new_ref(value, kind=var._ref_kind)

    @classmethod
    def of(cls, ref) -> 'FrameRef':
        """A frame value that is a variable's own reference storage: reads and writes go to it directly."""
        self = cls.__new__(cls)
        self.ref, self.manual, self.old, self.written = ref, (), None, False
        return self

    def value(self):
        """The current value (to be called at the frame's trace level, once the nested transform is done)."""
        return self.ref[...] if self.written else self.old


class Loan:
    """Stands in a variable's storage while a donating call has lent its value to a compiled program (see
    lending.Lending.lend): other threads reading or writing the variable wait until the new value is stored.

    A Loan made with `make` instead stands for a value not made yet (a variable created before JAX may touch a
    device): the first reader calls `make(var)`, which stores the value, and reads the storage again."""
    __slots__ = ('lock', 'thread', 'values', 'index', 'make')

    def __init__(self, index: Dict[int, int], make: Optional[Callable[[Any], None]] = None):
        self.lock = threading.Lock() if make is not None else None  # held while the value is made
        self.thread = None  # the lending thread
        self.values = None  # the lent values
        self.index = index  # id(variable) -> position in values
        self.make = make  # stores the value of a variable made on first use

    def wait(self, var):
        """The lent value when called from the lending thread; else waits until `var` no longer holds this loan
        (its new value is stored) and returns MISSING (read the storage again). A value made on first use is
        made (once) and MISSING returned."""
        if self.make is not None:
            with self.lock:
                self.make(var)
            return MISSING
        if self.thread == threading.get_ident():
            return self.values[self.index[id(var)]]
        wait_while(lambda: var._value is self)
        return MISSING

    def __repr__(self):
        return '<value being updated by a compiled call>'


def wait_while(busy: Callable[[], bool]) -> None:
    """Sleeps while `busy()` is true, checking it after 10 µs, then less and less often (every ms at most).
    The lender of a Loan holds no lock that others could wait on (Jit's common call takes none at all)."""
    delay = 1e-5
    while busy():
        time.sleep(delay)
        delay = min(2 * delay, 1e-3)


class _Local(threading.local):
    def __init__(self):
        self.frames = []
        self.written = {}  # id(variable) -> (variable, trace, value) of the last write through a reference


def remember(var, x) -> None:
    """Notes that `var` was just written `x` through an array reference while the current trace traced."""
    LOCAL.written[id(var)] = (var, current_trace(()), x)


def recall(var):
    """The value written to `var` by the current trace, when it was the last to write `var`; else MISSING.

    A read that follows a write in the same traced function gets the very value written, so gradients flow
    from the write to the read as they do eagerly (the reference holds it without gradient); a read in any
    other trace (e.g. the next iteration of a jax.lax.scan body) reads the reference."""
    entry = LOCAL.written.get(id(var))
    if entry is not None and entry[0] is var and entry[1] is current_trace(()):
        return entry[2]
    return MISSING


LOCAL = _Local()


def lookup(var):
    """The value `var` (a variable holding data) has in this thread's frames, MISSING (use its storage) or
    FROZEN (read outside the collection of a compiled transform: use its concrete value).

    Read by a JAX transformation running inside the innermost objax transform (e.g. the body of a jax.lax.scan
    inside Jit), the frame's value moves into a FrameRef first, so the traced body reads the value as it is
    when it runs rather than as it was when traced."""
    key = id(var)
    frames = LOCAL.frames
    for frame in reversed(frames):
        x = frame.values.get(key, MISSING)
        if x is not MISSING:
            if x.__class__ is FrameRef:
                y = recall(var)
                return ref_get(x.ref, var._label(), x.manual) if y is MISSING else y
            if frames[-1].trace is current_trace(()) or manual_axes() != frame.manual:
                return x  # a shard_map body cannot read an outer reference: it reads the value as a constant
            if frame.differentiated and var._ref_kind is None:
                # A differentiated trainable value is read as a constant of the nested transformation (JAX
                # 0.10 cannot rematerialize, in jax.checkpoint, a reference holding a differentiated value).
                return x
            ref = frame.values[key] = FrameRef(frame, x, var)
            return ref_get(ref.ref, var._label(), ref.manual)
        if key in frame.created:
            return MISSING
        if frame.owner is not None and not frame.open_reads:
            frame.outside_read(var)
            return FROZEN
    return MISSING


def store(var, x) -> bool:
    """Writes x as `var`'s value in the innermost frame that has it; False when no frame has it (write the
    storage). Raises VariableOutsideCollectionError when a compiled frame is met first. A write from a JAX
    transformation nested in the frame's transform goes through an array reference (see FrameRef)."""
    key = id(var)
    for frame in reversed(LOCAL.frames):
        if key in frame.values:
            old = frame.values[key]
            if old.__class__ is not FrameRef:
                if frame.trace is current_trace(()):
                    frame.values[key] = x
                    return True
                check_ref_context(var._label(), frame.manual)
                old = frame.values[key] = FrameRef(frame, old, var)
            ref_set(old.ref, x, var._label(), stop_gradient=False, manual=old.manual)
            old.written = True
            remember(var, x)
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
