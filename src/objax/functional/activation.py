"""Activation functions: relu and gelu, plus the jax.nn / jax.lax activations Objax re-exports."""

import jax

from objax.typing import JaxArray

__all__ = ['celu', 'elu', 'gelu', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'relu', 'selu', 'sigmoid', 'silu',
           'softmax', 'softplus', 'swish', 'tanh']

celu = jax.nn.celu
elu = jax.nn.elu
leaky_relu = jax.nn.leaky_relu
log_sigmoid = jax.nn.log_sigmoid
log_softmax = jax.nn.log_softmax
selu = jax.nn.selu
sigmoid = jax.nn.sigmoid
softmax = jax.nn.softmax
softplus = jax.nn.softplus
silu = jax.nn.silu
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


def gelu(x: JaxArray, approximate: bool = False) -> JaxArray:
    """Gaussian error linear unit x * Phi(x), element-wise (Phi: the standard normal distribution function).

    The exact form is x / 2 * (1 + erf(x / sqrt(2))) (PyTorch's default, used by BERT and ViT); the tanh form
    x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) is GPT-2's "gelu_new". Unlike jax.nn.gelu, the exact
    form is the default.

    Args:
        x: array of any shape.
        approximate: use the tanh approximation instead of erf.

    Returns:
        Array of x's shape and dtype.
    """
    return jax.nn.gelu(x, approximate=approximate)
