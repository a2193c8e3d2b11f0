"""Helpers shared by the tests of whole models."""

import jax.numpy as jn
import numpy as np

import objax


def randomize_batchnorm(module: objax.Module, rng: np.random.Generator):
    """Non-trivial running statistics and affine parameters for the batch norms of `module`, so that code moving
    them (export, conversion) is really checked."""
    for name, v in module.vars().items():
        if name.endswith(('.running_mean', '.beta')):
            v.assign(jn.asarray(rng.normal(size=v.shape) * 0.1, v.dtype))
        elif name.endswith(('.running_var', '.gamma')):
            v.assign(jn.asarray(rng.uniform(0.5, 1.5, size=v.shape), v.dtype))
