"""Objax 1.8 module path `objax.functional.core.ops`: general array operations."""

from objax.functional.interpolate import interpolate, upsample_2d, upscale_nn
from objax.functional.ops import dynamic_slice, one_hot, pad, rsqrt, scan, stop_gradient, top_k
from objax.functional.rearrange import flatten

__all__ = ['dynamic_slice', 'flatten', 'interpolate', 'one_hot', 'pad', 'rsqrt', 'scan', 'stop_gradient', 'top_k',
           'upsample_2d', 'upscale_nn']
