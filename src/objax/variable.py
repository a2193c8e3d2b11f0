"""Objax 1.8 module path `objax.variable`: the variable classes, reduce_mean and VarCollection."""

from objax._core.collection import VarCollection
from objax._core.variables import (AssignmentError, BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar,
                                   reduce_mean)

__all__ = ['BaseVar', 'BaseState', 'TrainVar', 'StateVar', 'TrainRef', 'RandomState', 'reduce_mean',
           'AssignmentError', 'VarCollection']
