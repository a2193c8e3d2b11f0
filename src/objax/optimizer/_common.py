"""Helpers shared by the optimizers: collecting TrainRefs, checking gradients before anything is written."""

from typing import List, Sequence

import numpy as np

from objax.module import ModuleList
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import TrainRef, TrainVar

__all__ = []


def train_refs(owner: str, vc: VarCollection) -> ModuleList:
    """One TrainRef per distinct TrainVar of `vc`, in collection order."""
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{owner}(vc): vc must be a VarCollection (e.g. model.vars()), got {type(vc).__name__}')
    return ModuleList(TrainRef(v) for v in vc.subset(TrainVar))


def reduce_first(x: JaxArray) -> JaxArray:
    """Keeps the first of the copies stacked on axis 0 (for counters, identical on every device)."""
    return x[0]


def check_grads(owner: str, refs: Sequence[TrainRef], grads) -> List[JaxArray]:
    """Returns `grads` as a list after checking there is one per TrainRef, each shaped like its variable."""
    if isinstance(grads, (np.ndarray, JaxArray)) or not hasattr(grads, '__iter__'):
        raise TypeError(f'{owner}: grads must be a list of arrays (one per TrainVar), got {type(grads).__name__}')
    grads = list(grads)
    if len(grads) != len(refs):
        raise ValueError(f'{owner} expected {len(refs)} gradients (one per TrainVar of the collection it was '
                         f'built with), got {len(grads)}; nothing was changed')
    errors = []
    for i, (ref, g) in enumerate(zip(refs, grads)):
        expected = tuple(ref.value.shape)
        got = tuple(np.shape(g))
        if got != expected:
            errors.append(f'grads[{i}] for {ref.ref._label()}: shape {got}, expected {expected}')
    if errors:
        raise ValueError(f'{owner}: gradients do not match the variables, nothing was changed:\n  '
                         + '\n  '.join(errors))
    return grads
