"""Cross-device reductions for functions run by objax.Parallel (its mapped axis is named 'device' by default).

Each takes the value one device holds (an array or a pytree of arrays) and returns, on every device, the
element-wise reduction over all devices of `axis_name`, with the same shape. Outside a transform that names
`axis_name` they raise NameError ("unbound axis name").
"""

import jax

from objax.typing import JaxArray

__all__ = ['pmax', 'pmean', 'pmin', 'psum']


def pmax(x: JaxArray, axis_name: str = 'device') -> JaxArray:
    """Element-wise maximum of x across the devices of axis_name.

    Args:
        x: this device's value, an array or a pytree of arrays.
        axis_name: name of the mapped axis to reduce over ('device' is objax.Parallel's).

    Returns:
        The reduction, same structure and shapes as x, equal on every device of the axis.

    Raises:
        NameError: axis_name is not bound (called outside objax.Parallel or another transform naming it).
    """
    return jax.lax.pmax(x, axis_name)


def pmean(x: JaxArray, axis_name: str = 'device') -> JaxArray:
    """Element-wise mean of x across the devices of axis_name (e.g. to average gradients).

    Args:
        x: this device's value, an array or a pytree of arrays.
        axis_name: name of the mapped axis to reduce over ('device' is objax.Parallel's).

    Returns:
        The reduction, same structure and shapes as x, equal on every device of the axis.

    Raises:
        NameError: axis_name is not bound (called outside objax.Parallel or another transform naming it).
    """
    return jax.lax.pmean(x, axis_name)


def pmin(x: JaxArray, axis_name: str = 'device') -> JaxArray:
    """Element-wise minimum of x across the devices of axis_name.

    Args:
        x: this device's value, an array or a pytree of arrays.
        axis_name: name of the mapped axis to reduce over ('device' is objax.Parallel's).

    Returns:
        The reduction, same structure and shapes as x, equal on every device of the axis.

    Raises:
        NameError: axis_name is not bound (called outside objax.Parallel or another transform naming it).
    """
    return jax.lax.pmin(x, axis_name)


def psum(x: JaxArray, axis_name: str = 'device') -> JaxArray:
    """Element-wise sum of x across the devices of axis_name.

    Args:
        x: this device's value, an array or a pytree of arrays.
        axis_name: name of the mapped axis to reduce over ('device' is objax.Parallel's).

    Returns:
        The reduction, same structure and shapes as x, equal on every device of the axis.

    Raises:
        NameError: axis_name is not bound (called outside objax.Parallel or another transform naming it).
    """
    return jax.lax.psum(x, axis_name)
