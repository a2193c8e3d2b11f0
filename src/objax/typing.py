"""Type aliases used across objax."""

from typing import IO, BinaryIO, Union

import jax
import numpy as np

__all__ = ['JaxArray', 'JaxDType', 'FileOrStr']

JaxArray = jax.Array
JaxDType = Union[np.complex64, np.complex128, jax.numpy.bfloat16, np.float16, np.float32, np.float64,
                 np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FileOrStr = Union[str, IO[BinaryIO]]
