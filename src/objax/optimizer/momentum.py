"""Gradient descent with (optionally Nesterov) momentum."""

from typing import List, Optional

import jax.numpy as jn

from objax.module import Module, ModuleList
from objax.optimizer._common import check_grads, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import StateVar

__all__ = ['Momentum']


class Momentum(Module):
    """m <- g + momentum * m; p <- p - lr * m, or p <- p - lr * (g + momentum * m) with `nesterov`.
    One StateVar `m` per TrainVar, shaped like it and starting at zero."""

    def __init__(self, vc: VarCollection, momentum: float = 0.9, nesterov: bool = False):
        self.momentum = momentum
        self.nesterov = nesterov
        self.train_vars = train_refs('Momentum', vc)
        self.m = ModuleList(StateVar(jn.zeros_like(ref.value)) for ref in self.train_vars)

    def __call__(self, lr: float, grads: List[JaxArray], momentum: Optional[float] = None):
        """Applies one step; `momentum` overrides the constructor's value for this call only."""
        grads = check_grads('Momentum', self.train_vars, grads)
        if momentum is None:
            momentum = self.momentum
        for ref, m, g in zip(self.train_vars, self.m, grads):
            p = ref.value
            m_new = (g + momentum * m.value).astype(m.value.dtype)
            step = g + momentum * m_new if self.nesterov else m_new
            m.value = m_new
            ref.value = (p - lr * step).astype(p.dtype)
