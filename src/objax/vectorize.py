"""Vectorize: runs a module or function on every example of a batch (jax.vmap) with shared variables."""

from typing import Callable, Optional, Tuple, Union

import jax

from objax import _repr, _state
from objax.module import Module, _module_and_vars
from objax.varcollection import VarCollection
from objax.variable import RandomState

__all__ = ['Vectorize']


class Vectorize(Module):
    """`Vectorize(f, vc, batch_axis)(*args)` maps f over axis `batch_axis[i]` of argument i (None: not
    batched). Variables are shared; each RandomState gives every example its own key; variables that f
    changes are merged back with their `reduce` (mean by default)."""

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 batch_axis: Tuple[Optional[int], ...] = (0,)):
        f, vc = _module_and_vars('Vectorize', f, vc)
        batch_axis = tuple(batch_axis)
        if all(a is None for a in batch_axis):
            raise ValueError('Vectorize: batch_axis must batch at least one argument (all entries are None)')
        self.__wrapped__ = f
        self.vc = vc
        self.batch_axis = batch_axis
        self._checked = list(vc)
        storage = _state.storage_of(self._checked)
        self._random = [v for v in storage if isinstance(v, RandomState)]
        random_ids = {id(v) for v in self._random}
        self._shared = [v for v in storage if id(v) not in random_ids]

    def __call__(self, *args):
        if len(args) != len(self.batch_axis):
            raise ValueError(f'Vectorize: got {len(args)} arguments but batch_axis {self.batch_axis} '
                             f'describes {len(self.batch_axis)}')
        sizes = {jax.numpy.shape(x)[a] for x, a in zip(args, self.batch_axis) if a is not None}
        if len(sizes) != 1:
            raise ValueError(f'Vectorize: batched arguments disagree on the batch size: {sorted(sizes)}')
        n = sizes.pop()
        shared_values = _state.read(self._shared, self._checked)
        random_values = [v.split(n) for v in self._random]
        storage = self._shared + self._random
        changed = []

        def one_example(shared, random, *example_args):
            with _state.Swap(storage, list(shared) + list(random)):
                outputs = self.__wrapped__(*example_args)
                new_values = [v._value for v in storage]
            before = list(shared) + list(random)
            changed[:] = [i for i, (old, new) in enumerate(zip(before, new_values)) if old is not new]
            return outputs, [new_values[i] for i in changed]

        outputs, new_values = jax.vmap(one_example, in_axes=(None, 0) + self.batch_axis)(
            shared_values, random_values, *args)
        for i, x in zip(changed, new_values):
            storage[i].reduce(x)
        return outputs

    # No vars() of its own (as in Objax 1.8): Module.vars names the variables `(Vectorize)` + the wrapped module's.

    def __repr__(self):
        return (f'{_repr.class_path(self)}(f={_repr.module_or_function_repr(self.__wrapped__)}, '
                f'batch_axis={self.batch_axis})')
