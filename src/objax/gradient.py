"""Objax 1.8 module path `objax.gradient`: Grad, GradValues, Jacobian and Hessian."""

from objax._core.gradient import Grad, GradValues, Hessian, Jacobian

__all__ = ['Grad', 'GradValues', 'Jacobian', 'Hessian']
