"""Jit: compiles a module or function together with the variables it reads and writes."""

import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import jax

from objax._core import frames, layout, reprs, structure
from objax._core.collection import VarCollection
from objax._core.lending import NO_REFS, NOT_LENT, one_step
from objax._core.modules import Module, module_or_function_repr
from objax._core.pure import Pure
from objax._core.refs import EVAL_TRACE, TRACE
from objax._core.transform import CompiledTransform, calls_back, lost_values_error, values_first

__all__ = ['Jit']

_LOCAL = frames.LOCAL


class Jit(CompiledTransform):
    """Compiles `f` with jax.jit. Each call reads the values of `vc`, runs the compiled function and writes
    back the new values. One compilation per distinct static signature (`static_argnums`/`static_argnames`).

    Without `vc` (f a Module), the collection is `f.vars()` and follows f: after a structure change (a variable
    or sub-module attribute replaced, a layer appended...) the next call collects it again and recompiles if it
    differs. With an explicit `vc`, a structure change that concerns f (a change of f itself, or of a module
    holding one of its variables) recompiles, and variables outside `vc` are frozen into the program with an
    objax.VariableOutsideCollectionWarning. After objax.sharding lays out some of its variables anew, the next
    call recompiles for their new layouts (laying out other variables does not). Writing a variable outside the
    collection raises objax.VariableOutsideCollectionError. Calls from several threads run one at a time (a
    call waits while another one has the variables).

    With `donate` (the default), the buffers of the variables' old values are donated to the compiled call,
    which writes the new values in place (no second copy of the state in memory). Donating deletes the old array
    and every other jax.Array on its buffer, so a value is copied for the call instead (arrays user code holds
    stay valid) when
    - its array is referenced by anything but the variable (e.g. `old = model.vars().tensors()` kept by user
      code, or another variable holding the same array), or
    - it is exposed (read eagerly by user code: `.value`, `vc.tensors()`, array operations on the variable
      outside any transform; or assigned by user code; since a compiled call last stored the variable) and
      another live jax.Array uses its buffer (e.g. `jax.device_put(v.value, same_device)`,
      `v.value.addressable_data(0)`), found by comparing buffer addresses with `jax.live_arrays()` on the next
      donating call.
    Values that only compiled calls have handled are donated without any check beyond the reference count.

    Args:
        f: the module or function to compile.
        vc: the variables f reads or writes; required when f is a plain function. None: `f.vars()`, following f.
        static_argnums: positions of f's arguments that are compile-time constants (hashable; each distinct
            value compiles anew).
        static_argnames: names of f's keyword arguments that are compile-time constants.
        donate: donate the old values' buffers to the compiled call (see above).

    Raises:
        TypeError: `f` is not callable or `vc` is not a VarCollection.
        ValueError: `f` is a plain function and `vc` is None.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 static_argnums: Optional[Tuple[int, ...]] = None,
                 static_argnames: Optional[Union[str, Sequence[str]]] = None, donate: bool = True):
        super().__init__('Jit', f, vc, donate)
        self.static_argnums = tuple(static_argnums or ())
        self._static_argnames = static_argnames
        self._close_refs = False  # see _run
        self._use(self.vc)

    def _compile(self):
        """New programs for `self._pure`, compiled at their first call, with the variables' current layouts."""
        self._call = self._jitted(self._pure)
        self._call_donating = self._jitted(self._pure, donate=True) if self.donate else None
        self._check_callbacks = self.donate  # see _keep_donating
        self._fast = None  # see __call__

    def _jitted(self, pure: Pure, donate: bool = False) -> Callable:
        """The jitted `pure`: (values, *args, **kwargs) -> (outputs, changes); with `donate`, (outputs, every
        variable's new value) with the values' buffers donated (reused for the new values).

        The keyword `_objax_refs` gives the jax.Ref storages ({position: reference}, None at their positions in
        values; see objax._core.pure.Pure.stored_apart): f reads and writes them in place, in order with any
        other JAX program f calls that uses them. When such a program closes over one of them, JAX refuses it as
        an argument too: the static keyword `_objax_closed_refs` ((position, reference) pairs) gives them
        instead, closed over by this program, which then holds them (see _run)."""
        # State values travel as the first argument: shift the user's (non-negative) static positions.
        argnums = values_first(self.static_argnums)
        names = self._static_argnames
        names = ((names,) if isinstance(names, str) else tuple(names or ())) + ('_objax_closed_refs',)
        layouts = self._layouts

        def fun(values, *args, _objax_refs=NO_REFS, _objax_closed_refs=(), **kwargs):
            refs = dict(_objax_closed_refs) or _objax_refs
            if refs:
                values = list(values)
                for i, ref in refs.items():
                    values[i] = frames.FrameRef.of(ref)
            outputs, changes = pure(values, *args, **kwargs)  # no change at the references' positions
            if layouts is not None:  # variables laid out by objax.sharding.shard: new values keep their layout
                changes = {i: layout.constrain(x, layouts[i]) for i, x in changes.items()}
            if donate:
                return outputs, [None if i in refs else changes.get(i, x) for i, x in enumerate(values)]
            return outputs, changes

        return jax.jit(fun, static_argnums=argnums, static_argnames=names, donate_argnums=(0,) if donate else ())

    def __call__(self, *args, **kwargs):
        """Runs the compiled function on the current variable values and stores the new ones.

        Args:
            *args: f's positional arguments (arrays, or hashable values at the static positions).
            **kwargs: f's keyword arguments.

        Returns:
            What f returns.

        Raises:
            objax.VariableOutsideCollectionError: f writes a variable that is not in the collection; nothing
                was changed.
        """
        fast = self._fast
        if (fast is not None and self._generation == structure.GENERATION and self._layout_version == layout.VERSION
                and TRACE.value is EVAL_TRACE and not _LOCAL.frames):
            # The common call, without a lock (see lending.py): programs and layouts as built, no transform runs.
            outputs = fast(args, kwargs)
            if outputs is not NOT_LENT:
                return outputs
        self._lock.acquire()
        try:
            if self._generation != structure.GENERATION:
                self._refresh()
            if self._layout_version != layout.VERSION and self._layouts_changed():
                self._use(self.vc, self._pure.warned)  # objax.sharding laid some of these variables out anew
            if _LOCAL.frames or TRACE.value is not EVAL_TRACE:  # (refs.jax_tracing, inlined)
                # Inside another transform (objax's, or a JAX transformation tracing: only then can arguments
                # be tracers): nothing to donate; the values are read and written where that transform keeps them.
                return self._call_inside(args, kwargs)
            if self._check_callbacks:
                self._keep_donating(args, kwargs)
                if self._call_donating is not None and self._layouts is None:
                    self._fast = one_step(self._lending, self._call_donating,
                                          functools.partial(lost_values_error, self._owner, self._pure))
            call = self._call_donating
            if call is None:
                return self._call_stored(args, kwargs)
            lending = self._lending
            values = lending.lend(refs=True)
            try:
                if lending.refs:
                    outputs, new = self._run(call, values, lending.refs, args, kwargs)
                else:
                    placed = values if self._layouts is None else self._placed(values)
                    outputs, new = call(placed, *args, **kwargs) if kwargs else call(placed, *args)
            except BaseException as e:
                lending.cancel()
                lost = lost_values_error(self._owner, self._pure, values, e)
                if lost is not None:
                    raise lost from e
                raise
            lending.repay(new)
            return outputs
        finally:
            self._lock.release()

    def _call_inside(self, args: tuple, kwargs: dict):
        """A call inside another transform: the values are those it gave the variables, and f's changes go
        back to it."""
        pure = self._pure
        outputs, changes = self._call(self._placed(pure.values()), *args, **kwargs)
        pure.write(changes)
        return outputs

    def _call_stored(self, args: tuple, kwargs: dict):
        """A call that does not donate, outside any transform: the stored values in, f's changes stored."""
        pure = self._pure
        values, refs = pure.stored_apart()
        if refs:
            outputs, changes = self._run(self._call, values, refs, args, kwargs)
        else:
            placed = values if self._layouts is None else self._placed(values)
            outputs, changes = self._call(placed, *args, **kwargs) if kwargs else self._call(placed, *args)
        pure.store(changes)
        return outputs

    def _keep_donating(self, args: tuple, kwargs: dict):
        """Before the first donating call of new programs: a function that calls back into Python (whose
        callback may raise while the program runs, after the program took the donated buffers) is not donated,
        so that such a failure never costs the variables their values. The trace made here is the one the call
        then uses (jax.jit caches it)."""
        self._check_callbacks = False
        values, refs = self._pure.stored_apart()
        if refs:
            return
        if calls_back(self._call_donating.trace(self._placed(values), *args, **kwargs).jaxpr):
            self._call_donating = None

    def _run(self, call: Callable, values: list, refs: dict, args: tuple, kwargs: dict):
        """call(values, *args, **kwargs), given the variables kept in jax.Ref storages (see objax._core.refs), which
        the program writes in place: passed as arguments, or closed over once f turned out to call another JAX
        program that closes over one of them."""
        if not self._close_refs:
            try:
                return call(self._placed(values), *args, _objax_refs=refs, **kwargs)
            except ValueError as e:  # raised while tracing, before anything ran or was donated
                if 'closed over and passed' not in str(e):
                    raise
                self._close_refs = True
        return call(self._placed(values), *args, _objax_closed_refs=tuple(refs.items()), **kwargs)

    def _placed(self, values: list) -> list:
        """values, each laid out as its variable's objax.sharding layout (a value assigned from outside is
        moved there once; values already in place are passed as they are)."""
        if self._layouts is None:
            return values
        return [x if s is None or x is None else layout.place(x, s) for x, s in zip(values, self._layouts)]

    # No vars() of its own (as in Objax 1.8): Module.vars names the variables `(Jit)` + the wrapped module's.

    def __repr__(self):
        return (f'{reprs.class_path(self)}(f={module_or_function_repr(self.__wrapped__)}, '
                f'static_argnums={self.static_argnums or None})')
