"""Objax 1.8 module path `objax.functional.core.activation`: the activations and logsumexp."""

from objax.functional.activation import (
                                         celu,
                                         elu,
                                         leaky_relu,
                                         log_sigmoid,
                                         log_softmax,
                                         relu,
                                         selu,
                                         sigmoid,
                                         softmax,
                                         softplus,
                                         swish,
                                         tanh,
)
from objax.functional.ops import logsumexp

__all__ = ['celu', 'elu', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'logsumexp', 'relu', 'selu', 'sigmoid',
           'softmax', 'softplus', 'swish', 'tanh']
