"""Stateless functions: activations, pooling, rearrangements, resizing, losses and re-exported jax functions."""

from objax.functional import core, divergence, loss, parallel
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
from objax.functional.interpolate import interpolate, upsample_2d, upscale_nn
from objax.functional.ops import dynamic_slice, logsumexp, one_hot, pad, rsqrt, scan, stop_gradient, top_k
from objax.functional.pooling import average_pool_2d, max_pool_2d
from objax.functional.rearrange import (
                                         batch_to_space2d,
                                         channel_to_space2d,
                                         flatten,
                                         space_to_batch2d,
                                         space_to_channel2d,
)

__all__ = ['average_pool_2d', 'batch_to_space2d', 'celu', 'channel_to_space2d', 'core', 'divergence',
           'dynamic_slice', 'elu', 'flatten', 'interpolate', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'logsumexp',
           'loss', 'max_pool_2d', 'one_hot', 'pad', 'parallel', 'relu', 'rsqrt', 'scan', 'selu', 'sigmoid',
           'softmax', 'softplus', 'space_to_batch2d', 'space_to_channel2d', 'stop_gradient', 'swish', 'tanh',
           'top_k', 'upsample_2d', 'upscale_nn']
