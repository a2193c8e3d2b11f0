"""Jit: compiles a module or function together with the variables it reads and writes."""

from typing import Callable, Optional, Sequence, Tuple, Union

import jax

from objax import _state, _trace, sharding
from objax.module import Module, _module_and_vars, _owner_label, _prefixed
from objax.varcollection import VarCollection

__all__ = ['Jit']


class Jit(Module):
    """Compiles `f` with jax.jit. Each call reads the values of `vc`, runs the compiled function and writes
    back the new values. One compilation per distinct static signature (`static_argnums`/`static_argnames`)."""

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 static_argnums: Optional[Tuple[int, ...]] = None,
                 static_argnames: Optional[Union[str, Sequence[str]]] = None):
        f, vc = _module_and_vars('Jit', f, vc)
        self.__wrapped__ = f
        self.vc = vc
        self.static_argnums = tuple(static_argnums or ())
        self._checked = list(vc)
        self._storage = _state.storage_of(self._checked)
        self._allowed = _state.allowed_ids(vc)
        self._owner = _owner_label('Jit', f)
        self._namer = _state.namer(f, vc)
        # State values travel as the first argument: shift the user's (non-negative) static positions.
        argnums = tuple(i + 1 if i >= 0 else i for i in self.static_argnums)
        self._call = jax.jit(self._traced, static_argnums=argnums, static_argnames=static_argnames)
        # Variables laid out by objax.sharding.shard: compiled again with their layouts as out_shardings.
        self._layouts = sharding._JitLayouts(self._storage, lambda out: jax.jit(
            self._traced, static_argnums=argnums, static_argnames=static_argnames, out_shardings=out))

    def _traced(self, values, *args, **kwargs):
        storage = self._storage
        _trace.push(set(self._allowed), self._owner, self._namer)
        try:
            with _state.Swap(storage, values):
                outputs = self.__wrapped__(*args, **kwargs)
                new_values = [v._value for v in storage]
        finally:
            _trace.pop()
        return outputs, new_values

    def __call__(self, *args, **kwargs):
        """Runs the compiled function on the current variable values and stores the new ones."""
        call, values = self._layouts(self._call, _state.read(self._storage, self._checked))
        outputs, new_values = call(values, *args, **kwargs)
        _state.write(self._storage, new_values)
        return outputs

    def vars(self, scope: str = '') -> VarCollection:
        """The collection the function was compiled with, names prefixed with `scope`."""
        return _prefixed(self.vc, scope)

    def __repr__(self):
        return f'{type(self).__name__}(f={self.__wrapped__!r}, static_argnums={self.static_argnums or None})'
