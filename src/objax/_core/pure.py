"""The pure-function primitive under every transform: a function of variables as a function of their values.

`Pure(f, vc)` is, with lending.py (the values taken out for a donating call), the only code besides
variables.py that reads or writes the storage of variables. It is Objax's cut-down version of Flax NNX's
split/merge (Equinox's partition/combine) for a flat collection:

    pure = Pure(f, vc)                  # vc: a VarCollection (or any iterable of variables)
    values = pure.values()              # current values of pure.variables, a list
    outputs, changes = pure(values, *args, **kwargs)
    pure.write(changes)                 # what f wrote, stored (or kept in an enclosing transform)

`pure(values, ...)` runs `f(*args, **kwargs)` with `pure.variables[i]` holding `values[i]` (seen by this
thread only) and returns f's outputs and `changes = {i: new value}` for every variable f wrote. It changes
no variable: it can be traced by jax.jit / grad / vmap / shard_map, called from several threads at once, and
an exception inside f leaves everything as it was.
"""

from typing import Callable, Dict, Iterable, List, Optional

import jax

from objax._core.frames import LOCAL, Frame, FrameRef, Loan
from objax._core.lending import NO_REFS, UNSHARED, RefWatch, refcounts
from objax._core.refs import REFS, STORAGE_LOCK, Ref, Tracer, jax_tracing, ref_get
from objax._core.variables import BaseVar, storage_groups

__all__ = ['Pure', 'has_tracer', 'storage_of']

_LOCAL = LOCAL
_tracing = jax_tracing


def storage_of(variables: Iterable[BaseVar]) -> List[BaseVar]:
    """The distinct variables that hold data behind `variables` (a TrainRef resolves to its TrainVar)."""
    return [storage for storage, _ in storage_groups((None, v) for v in variables)]


class Pure(RefWatch):
    """`f`, a function or module using the variables of `vc`, as `(values, *args, **kwargs) -> (outputs,
    changes)`. See the module docstring.

    Args:
        f: what to run (None when only `values` and `write` are used).
        vc: the variables f may use, a VarCollection or any iterable of variables (a TrainRef stands for its
            TrainVar).
        owner: for a compiled transform, its label such as 'Jit(train_op)': while f runs, reading a variable
            outside vc (and outside any enclosing transform up to this one) warns once per variable with
            objax.VariableOutsideCollectionWarning and uses its current value (frozen into the compiled
            program); writing one raises objax.VariableOutsideCollectionError.
        describe: the best-effort name of a variable, for those messages (see
            objax._core.introspect.variable_namer); None: variables are shown by their repr.

    Attributes:
        variables: the distinct variables holding the data of vc, in vc's order; `values`, `changes` and the
            `values` argument of a call are positional over this list.
        differentiated: set by the gradient transforms, whose calls get differentiated trainable values.
        open_reads: set by Remat and the control flow: with an `owner`, a read outside vc looks through to the
            enclosing transforms (or the storage) instead of being frozen; a write outside vc still raises.
        warned: ids of the variables already warned about (kept by a compiled transform across rebuilds).
        describe: the `describe` given.
    """
    differentiated = False
    open_reads = False

    def __init__(self, f: Optional[Callable], vc: Iterable[BaseVar], owner: Optional[str] = None,
                 describe: Optional[Callable[[BaseVar], Optional[str]]] = None):
        self.f = f
        self.variables = _made(storage_of(vc))
        self.owner = owner
        self._ids = [id(v) for v in self.variables]
        self.warned = set()  # variables already warned about: once per compiled function and variable
        self.describe = describe

    def values(self) -> list:
        """The current values of `variables` (inside a running transform, the values it gave them; while a JAX
        transformation traces, values read through the variables' array references).

        Returns:
            One value per variable.
        """
        if _LOCAL.frames or _tracing():
            return [v._read() for v in self.variables]
        return self.stored()

    def stored(self) -> list:
        """`values` for a caller that runs outside any transform and JAX transformation (and knows it).

        Returns:
            One value per variable (for a jax.Ref storage, see objax._core.refs, a copy of its value).
        """
        values, refs = self.stored_apart()
        for i, ref in refs.items():
            values[i] = ref_get(ref, self.variables[i]._label())
        return values

    def stored_apart(self) -> tuple:
        """`stored`, the jax.Ref storages apart: (values with None in place of each reference, {position:
        reference}). A variable whose storage is a jax.Ref that nothing else references any more (no JAX program
        holds it) gets a plain array again first."""
        variables = self.variables
        version = REFS[0]
        values = [v._value for v in variables]
        for x in values:
            if x.__class__ is Loan:  # lent to a call (wait for its new value) or made on first use
                values = [v._stored() for v in variables]
                break
        if self._no_refs_at == version or not self._has_refs(values, version):
            return values, NO_REFS
        x = values = None  # _unref_stored counts the references to each storage
        values = _unref_stored(variables)
        refs = {i: x for i, x in enumerate(values) if type(x) is Ref}
        return [None if type(x) is Ref else x for x in values], refs

    def write(self, changes: Dict[int, object]) -> None:
        """Stores `changes` ({position in variables: new value}, as returned by a call). Inside a running
        transform the values go where its function sees them; a compiled transform whose collection lacks one
        of these variables raises objax.VariableOutsideCollectionError (its trace is then abandoned)."""
        if _LOCAL.frames or _tracing():
            for i, x in changes.items():
                self.variables[i]._write(x)
        else:
            self.store(changes)

    def store(self, changes: Dict[int, object]) -> None:
        """`write` for a caller that runs outside any transform and JAX transformation (and knows it)."""
        variables = self.variables
        STORAGE_LOCK.acquire()  # no storage becomes a jax.Ref meanwhile (see _OwnValue._as_ref)
        try:
            version = REFS[0]
            if self._no_refs_at == version or not self._has_refs([v._value for v in variables], version):
                for i, x in changes.items():
                    variables[i]._value = x
                return
        finally:
            STORAGE_LOCK.release()
        for i, x in changes.items():
            variables[i]._write(x)

    def __call__(self, values, *args, **kwargs):
        """Runs f with `variables[i]` holding `values[i]`. Returns `(outputs, changes)`, changes being
        `{i: new value}` for the variables f assigned (a new value object, even if equal)."""
        ids = self._ids
        if len(values) != len(ids):
            raise ValueError(f'{self.owner or "Pure"}: got {len(values)} values for {len(ids)} variables')
        frame = Frame(dict(zip(ids, values)), self.owner, self.warned, self.describe)
        frame.differentiated = self.differentiated
        frame.open_reads = self.open_reads
        frames = _LOCAL.frames
        depth = len(frames)
        frames.append(frame)
        try:
            outputs = self.f(*args, **kwargs)
        finally:
            del frames[depth:]
        new = frame.values
        changes = {i: new[k] for i, (k, x) in enumerate(zip(ids, values)) if new[k] is not x}
        if FrameRef in map(type, changes.values()):  # used by a JAX transformation nested in f
            changes = {i: x.value() if type(x) is FrameRef else x for i, x in changes.items()
                       if type(x) is not FrameRef or x.written or x.old is not values[i]}
        return outputs, changes


def _made(variables: List[BaseVar]) -> List[BaseVar]:
    """`variables`, after making the values of those made on first use (stored() and a Lending read storages)."""
    for v in variables:
        x = v._value
        if x.__class__ is Loan and x.make is not None:
            v._stored()
    return variables


def has_tracer(tree) -> bool:
    """True when a leaf of `tree` is a jax tracer (the caller runs inside a jax transformation)."""
    return any(isinstance(x, Tracer) for x in jax.tree.leaves(tree))


def _unref_stored(variables: List[BaseVar]) -> list:
    """The storages of `variables`, after storing a plain array again in each variable whose storage is a
    jax.Ref that nothing else references (no JAX program holds it)."""
    with STORAGE_LOCK:  # no other thread takes or converts a storage meanwhile
        values = [v._value for v in variables]
        for i, n in enumerate(refcounts(values)):
            if type(values[i]) is Ref and n <= UNSHARED + 1:  # held by the list and the variable only
                values[i] = variables[i]._value = ref_get(values[i], variables[i]._label())
    return values
