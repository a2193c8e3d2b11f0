"""Objax 1.8 module path `objax.functional.core.pooling`: pooling and space/batch/channel rearrangements."""

from objax.functional.pooling import average_pool_2d, max_pool_2d
from objax.functional.rearrange import batch_to_space2d, channel_to_space2d, space_to_batch2d, space_to_channel2d

__all__ = ['average_pool_2d', 'batch_to_space2d', 'channel_to_space2d', 'max_pool_2d', 'space_to_batch2d',
           'space_to_channel2d']
