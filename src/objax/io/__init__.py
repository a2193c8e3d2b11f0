"""Saving and loading variables: Objax .npz files, atomic checkpoints, safetensors files and published weights."""

from objax.io._match import ShapeMismatchError, UnreadableFileError
from objax.io.checkpoint import Checkpoint
from objax.io.ops import load_var_collection, save_var_collection
from objax.io.pretrained import load_tensors, read_tensors
from objax.io.safetensors import load_safetensors, save_safetensors
from objax.io.sharded import ShardedCheckpoint

__all__ = ['Checkpoint', 'ShardedCheckpoint', 'load_var_collection', 'save_var_collection', 'load_safetensors',
           'save_safetensors', 'read_tensors', 'load_tensors', 'ShapeMismatchError', 'UnreadableFileError']
