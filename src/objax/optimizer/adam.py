"""Adam with bias correction."""

from typing import List, Optional

import jax.numpy as jn

from objax.module import Module, ModuleList
from objax.optimizer._common import check_grads, reduce_first, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import StateVar

__all__ = ['Adam']


class Adam(Module):
    """Adam as in Objax 1.x, with eps inside the square root of the raw second moment:
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1;
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / sqrt(v + eps).
    State: `step` (uint32 StateVar) and one `m` and one `v` StateVar per TrainVar, shaped like it."""

    def __init__(self, vc: VarCollection, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.step = StateVar(jn.array(0, jn.uint32), reduce=reduce_first)
        self.train_vars = train_refs('Adam', vc)
        self.m = ModuleList(StateVar(jn.zeros_like(ref.value)) for ref in self.train_vars)
        self.v = ModuleList(StateVar(jn.zeros_like(ref.value)) for ref in self.train_vars)

    def __call__(self, lr: float, grads: List[JaxArray], beta1: Optional[float] = None,
                 beta2: Optional[float] = None):
        """Applies one step; `beta1`/`beta2` override the constructor's values for this call only."""
        grads = check_grads('Adam', self.train_vars, grads)
        beta1 = self.beta1 if beta1 is None else beta1
        beta2 = self.beta2 if beta2 is None else beta2
        step = self.step.value + 1
        self.step.value = step
        t = step.astype(jn.float32)
        scaled_lr = lr * jn.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for ref, m, v, g in zip(self.train_vars, self.m, self.v, grads):
            p = ref.value
            m_new = (beta1 * m.value + (1 - beta1) * g).astype(m.value.dtype)
            v_new = (beta2 * v.value + (1 - beta2) * jn.square(g)).astype(v.value.dtype)
            m.value, v.value = m_new, v_new
            ref.value = (p - scaled_lr * m_new * jn.reciprocal(jn.sqrt(v_new + self.eps))).astype(p.dtype)
