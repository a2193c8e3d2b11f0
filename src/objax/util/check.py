"""Checks applied before assigning a new value to a variable."""

import jax
import numpy as np

from objax._core.variables import AssignmentError as AssignmentCheckError

__all__ = ['AssignmentCheckError', 'assert_assigned_type_and_shape_match']

# AssignmentCheckError is objax.AssignmentError (a ValueError and an AssertionError, as in Objax 1.8) under the
# name this module always gave it: one error for every refused assignment.


def assert_assigned_type_and_shape_match(existing_tensor, new_tensor):
    """Checks that `new_tensor` can replace `existing_tensor`: an array (jax or numpy) of the same shape.

    Args:
        existing_tensor: the variable's current value.
        new_tensor: the value to assign.

    Raises:
        AssignmentCheckError: (a ValueError and an AssertionError) not an array, or another shape.
    """
    if not isinstance(new_tensor, (jax.Array, np.ndarray)):
        raise AssignmentCheckError(f'Assignments to a variable must be arrays (jax.Array), '
                                   f'got {type(new_tensor).__name__}')
    existing_shape = tuple(np.shape(existing_tensor))
    if existing_shape != tuple(new_tensor.shape):
        raise AssignmentCheckError(f'Assigned value has shape {tuple(new_tensor.shape)} but the variable has shape '
                                   f'{existing_shape}')
