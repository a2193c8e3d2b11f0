"""General jax functions that Objax re-exports under objax.functional."""

import jax
import jax.numpy as jn
import jax.scipy.special

__all__ = ['dynamic_slice', 'logsumexp', 'one_hot', 'pad', 'rsqrt', 'scan', 'stop_gradient', 'top_k']

dynamic_slice = jax.lax.dynamic_slice
logsumexp = jax.scipy.special.logsumexp
one_hot = jax.nn.one_hot
pad = jn.pad
rsqrt = jax.lax.rsqrt
scan = jax.lax.scan
stop_gradient = jax.lax.stop_gradient
top_k = jax.lax.top_k
