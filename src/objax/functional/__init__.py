"""Stateless functions: activations, attention, pooling, rearrangements, resizing, losses, re-exported jax functions."""

from objax.functional import divergence, loss, parallel
from objax.functional.activation import (
                                         celu,
                                         elu,
                                         gelu,
                                         leaky_relu,
                                         log_sigmoid,
                                         log_softmax,
                                         relu,
                                         selu,
                                         sigmoid,
                                         silu,
                                         softmax,
                                         softplus,
                                         swish,
                                         tanh,
)
from objax.functional.attention import causal_mask, dot_product_attention, rotary_embedding
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

__all__ = ['average_pool_2d', 'batch_to_space2d', 'causal_mask', 'celu', 'channel_to_space2d', 'divergence',
           'dot_product_attention', 'dynamic_slice', 'elu', 'flatten', 'gelu', 'interpolate', 'leaky_relu',
           'log_sigmoid', 'log_softmax', 'logsumexp', 'loss', 'max_pool_2d', 'one_hot', 'pad', 'parallel', 'relu',
           'rotary_embedding', 'rsqrt', 'scan', 'selu', 'sigmoid', 'silu', 'softmax', 'softplus', 'space_to_batch2d',
           'space_to_channel2d', 'stop_gradient', 'swish', 'tanh', 'top_k', 'upsample_2d', 'upscale_nn']
