"""Divergences between probability distributions."""

import jax.numpy as jn

from objax.typing import JaxArray

__all__ = ['kl']


def kl(p: JaxArray, q: JaxArray, eps: float = 2 ** -17) -> JaxArray:
    """KL(p || q) over the last axis: sum(p * (log(p + eps) - log(q + eps))), shape (...)."""
    return (p * (jn.log(p + eps) - jn.log(q + eps))).sum(-1)
