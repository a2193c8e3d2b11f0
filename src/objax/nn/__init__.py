"""Neural-network layers."""

from objax.nn import init
from objax.nn.attention import KVCache, MultiHeadAttention
from objax.nn.batchnorm import BatchNorm, BatchNorm0D, BatchNorm1D, BatchNorm2D
from objax.nn.conv import Conv2D, ConvTranspose2D
from objax.nn.dropout import Dropout
from objax.nn.embedding import Embedding
from objax.nn.groupnorm import GroupNorm, GroupNorm0D, GroupNorm1D, GroupNorm2D
from objax.nn.layernorm import LayerNorm, RMSNorm
from objax.nn.linear import Linear
from objax.nn.lora import LoRALinear, add_lora, lora_layers, merge_lora
from objax.nn.mixed_precision import NORMALIZATION_LAYERS, MixedPrecision
from objax.nn.moving_average import ExponentialMovingAverage, MovingAverage
from objax.nn.recurrent import GRUCell, LSTMCell
from objax.nn.sequential import Sequential
from objax.nn.stack import Stack
from objax.nn.synced_batchnorm import SyncedBatchNorm, SyncedBatchNorm0D, SyncedBatchNorm1D, SyncedBatchNorm2D

__all__ = ['init', 'BatchNorm', 'BatchNorm0D', 'BatchNorm1D', 'BatchNorm2D', 'Conv2D', 'ConvTranspose2D', 'Dropout',
           'Embedding', 'ExponentialMovingAverage', 'GroupNorm', 'GroupNorm0D', 'GroupNorm1D', 'GroupNorm2D',
           'GRUCell', 'KVCache', 'LayerNorm', 'Linear', 'LoRALinear', 'LSTMCell', 'MixedPrecision', 'MovingAverage',
           'MultiHeadAttention', 'NORMALIZATION_LAYERS', 'RMSNorm', 'Sequential', 'Stack', 'SyncedBatchNorm',
           'SyncedBatchNorm0D', 'SyncedBatchNorm1D', 'SyncedBatchNorm2D', 'add_lora', 'lora_layers', 'merge_lora']
