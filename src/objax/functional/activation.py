"""Activation functions: relu, plus the jax.nn / jax.lax activations Objax re-exports."""

import jax

from objax.typing import JaxArray

__all__ = ['celu', 'elu', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'relu', 'selu', 'sigmoid', 'softmax',
           'softplus', 'swish', 'tanh']

celu = jax.nn.celu
elu = jax.nn.elu
leaky_relu = jax.nn.leaky_relu
log_sigmoid = jax.nn.log_sigmoid
log_softmax = jax.nn.log_softmax
selu = jax.nn.selu
sigmoid = jax.nn.sigmoid
softmax = jax.nn.softmax
softplus = jax.nn.softplus
swish = jax.nn.silu
tanh = jax.lax.tanh


def relu(x: JaxArray) -> JaxArray:
    """max(x, 0), element-wise.

    Args:
        x: array of any shape.

    Returns:
        Array of x's shape and dtype.
    """
    return jax.nn.relu(x)
