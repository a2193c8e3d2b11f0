"""Layer-wise adaptive rate scaling (LARS) with momentum and weight decay."""

from typing import List

import jax.numpy as jn

from objax.module import Module, ModuleList
from objax.optimizer._common import check_grads, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import StateVar

__all__ = ['LARS']


class LARS(Module):
    """Per TrainVar p with gradient g (norms over the whole tensor):
    trust = tc * |p| / (|g| + weight_decay * |p| + eps), or 1 when |p| or |g| is 0;
    m <- momentum * m + lr * trust * (g + weight_decay * p);  p <- p - m."""

    def __init__(self, vc: VarCollection, momentum: float = 0.9, weight_decay: float = 1e-4, tc: float = 1e-3,
                 eps: float = 1e-5):
        self.momentum = momentum
        self.wd = weight_decay
        self.tc = tc
        self.eps = eps
        self.train_vars = train_refs('LARS', vc)
        self.m = ModuleList(StateVar(jn.zeros_like(ref.value)) for ref in self.train_vars)

    def __call__(self, lr: float, grads: List[JaxArray]):
        """Applies one step; grads are aligned with the TrainVars of the collection."""
        grads = check_grads('LARS', self.train_vars, grads)
        for ref, m, g in zip(self.train_vars, self.m, grads):
            p = ref.value
            p_norm = jn.linalg.norm(p)
            g_norm = jn.linalg.norm(g)
            trust = self.tc * p_norm / (g_norm + self.wd * p_norm + self.eps)
            trust = jn.where(jn.logical_or(p_norm == 0, g_norm == 0), 1.0, trust)
            m_new = (self.momentum * m.value + lr * trust * (g + self.wd * p)).astype(m.value.dtype)
            m.value = m_new
            ref.value = (p - m_new).astype(p.dtype)
