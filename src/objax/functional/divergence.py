"""Divergences between probability distributions."""

import jax.numpy as jn

from objax.typing import JaxArray

__all__ = ['kl']


def kl(p: JaxArray, q: JaxArray, eps: float = 2 ** -17) -> JaxArray:
    """KL(p || q) over the last axis: sum(p * (log(p + eps) - log(q + eps))), shape (...).

    Args:
        p: probability distributions of shape (..., K).
        q: probability distributions broadcasting with p, last axis K.
        eps: added to p and q inside the logs, so that zero probabilities give finite values.

    Returns:
        The divergence of each distribution pair, of the broadcast shape without its last axis.
    """
    return (p * (jn.log(p + eps) - jn.log(q + eps))).sum(-1)
