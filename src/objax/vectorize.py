"""Vectorize: runs a module or function on every example of a batch (jax.vmap) with shared variables."""

from typing import Callable, Optional, Tuple, Union

import jax

from objax import _state, _structure
from objax.module import Module, _module_and_vars, _prefixed
from objax.varcollection import VarCollection
from objax.variable import RandomState

__all__ = ['Vectorize']


class Vectorize(Module):
    """`Vectorize(f, vc, batch_axis)(*args)` maps f over axis `batch_axis[i]` of argument i (None: not
    batched). Variables are shared; each RandomState gives every example its own key; variables that f
    changes are merged back with their `reduce` (mean by default)."""

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 batch_axis: Tuple[Optional[int], ...] = (0,)):
        follows_module = vc is None
        f, vc = _module_and_vars('Vectorize', f, vc)
        batch_axis = tuple(batch_axis)
        if all(a is None for a in batch_axis):
            raise ValueError('Vectorize: batch_axis must batch at least one argument (all entries are None)')
        self.__wrapped__ = f
        self.vc = vc
        self.batch_axis = batch_axis
        self._follows_module = follows_module
        self._use(vc)

    def _use(self, vc: VarCollection):
        self.vc = vc
        self._pure = _state.Pure(self.__wrapped__, vc)
        self._random = [i for i, v in enumerate(self._pure.variables) if isinstance(v, RandomState)]
        self._generation = _structure.GENERATION

    def __call__(self, *args):
        if len(args) != len(self.batch_axis):
            raise ValueError(f'Vectorize: got {len(args)} arguments but batch_axis {self.batch_axis} '
                             f'describes {len(self.batch_axis)}')
        sizes = {jax.numpy.shape(x)[a] for x, a in zip(args, self.batch_axis) if a is not None}
        if len(sizes) != 1:
            raise ValueError(f'Vectorize: batched arguments disagree on the batch size: {sorted(sizes)}')
        n = sizes.pop()
        if self._follows_module and self._generation != _structure.GENERATION:
            self._use(self.__wrapped__.vars())
        pure, random = self._pure, self._random
        values = pure.values()
        keys = [pure.variables[i].split(n) for i in random]  # one key per example; the states advance

        def one_example(shared, example_keys, *example_args):
            call_values = list(shared)
            for i, key in zip(random, example_keys):
                call_values[i] = key
            return pure(call_values, *example_args)

        outputs, changes = jax.vmap(one_example, in_axes=(None, 0) + self.batch_axis)(values, keys, *args)
        for i, x in changes.items():
            pure.variables[i].reduce(x)
        return outputs

    def vars(self, scope: str = '') -> VarCollection:
        """The collection f runs with (f.vars() when built from a module alone), names prefixed with `scope`."""
        if self._follows_module and self._generation != _structure.GENERATION:
            self._use(self.__wrapped__.vars())
        return _prefixed(self.vc, scope)
