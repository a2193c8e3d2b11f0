"""Neural-network layers."""

from objax.nn import init
from objax.nn.linear import Linear

__all__ = ['init', 'Linear']
