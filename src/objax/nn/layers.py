"""Objax 1.8 module path `objax.nn.layers`: every layer class (aliases of objax.nn)."""

from objax.nn.batchnorm import BatchNorm, BatchNorm0D, BatchNorm1D, BatchNorm2D
from objax.nn.conv import Conv2D, ConvTranspose2D
from objax.nn.dropout import Dropout
from objax.nn.groupnorm import GroupNorm, GroupNorm0D, GroupNorm1D, GroupNorm2D
from objax.nn.linear import Linear
from objax.nn.moving_average import ExponentialMovingAverage, MovingAverage
from objax.nn.sequential import Sequential
from objax.nn.synced_batchnorm import SyncedBatchNorm, SyncedBatchNorm0D, SyncedBatchNorm1D, SyncedBatchNorm2D

__all__ = ['BatchNorm', 'BatchNorm0D', 'BatchNorm1D', 'BatchNorm2D', 'Conv2D', 'ConvTranspose2D', 'Dropout',
           'ExponentialMovingAverage', 'GroupNorm', 'GroupNorm0D', 'GroupNorm1D', 'GroupNorm2D', 'Linear',
           'MovingAverage', 'Sequential', 'SyncedBatchNorm', 'SyncedBatchNorm0D', 'SyncedBatchNorm1D',
           'SyncedBatchNorm2D']
