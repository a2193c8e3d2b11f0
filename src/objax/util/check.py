"""Checks applied before assigning a new value to a variable."""

import jax
import numpy as np

__all__ = ['assert_assigned_type_and_shape_match']


def assert_assigned_type_and_shape_match(existing_tensor, new_tensor):
    """Raises ValueError unless `new_tensor` is an array (jax or numpy) with the shape of `existing_tensor`."""
    if not isinstance(new_tensor, (jax.Array, np.ndarray)):
        raise ValueError(f'Assignments to a variable must be arrays (jax.Array), got {type(new_tensor).__name__}')
    existing_shape = tuple(np.shape(existing_tensor))
    if existing_shape != tuple(new_tensor.shape):
        raise ValueError(f'Assigned value has shape {tuple(new_tensor.shape)} but the variable has shape '
                         f'{existing_shape}')
