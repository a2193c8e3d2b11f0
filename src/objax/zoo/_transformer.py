"""Parts shared by the transformer models of the zoo: the pre-norm block and loading published weights."""

import json
import os
from typing import Dict, Optional

import numpy as np

from objax import functional
from objax.module import Module
from objax.nn import Dropout, LayerNorm, Linear, MultiHeadAttention
from objax.typing import JaxArray

__all__ = ['PreNormBlock', 'check_tied', 'dropout_layer', 'maybe_dropout', 'read_config', 'split_columns']


def dropout_layer(keep: float) -> Optional[Dropout]:
    """A Dropout keeping `keep`, or None when it keeps everything (so that the model holds no random key)."""
    return Dropout(keep) if keep < 1 else None


def maybe_dropout(layer: Optional[Dropout], x: JaxArray, training: bool) -> JaxArray:
    return x if layer is None else layer(x, training)


class PreNormBlock(Module):
    """x + attn(norm1(x)), then + fc2(gelu(fc1(norm2(x)))), with dropout on both residual branches while training
    (the block of GPT-2 and of ViT)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float, causal: bool, approximate: bool,
                 keep: float):
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, num_heads, causal=causal)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.dropout = dropout_layer(keep)
        self.approximate = approximate

    def __call__(self, x: JaxArray, training: bool, cache=None):
        """(x after the block, the updated cache or None); x (batch, T, dim)."""
        h = self.norm1(x)
        if cache is None:
            h = self.attn(h)
        else:
            h, cache = self.attn(h, cache=cache)
        x = x + maybe_dropout(self.dropout, h, training)
        h = self.fc2(functional.gelu(self.fc1(self.norm2(x)), approximate=self.approximate))
        return x + maybe_dropout(self.dropout, h, training), cache


def split_columns(n: int, i: int, count: int = 3):
    """A transform taking part i of `count` parts of size n of the last axis of an array (a fused q/k/v weight);
    it refuses an array whose last axis is not count * n."""
    def part(a):
        if a.shape[-1] != count * n:
            raise ValueError(f'the last axis should hold {count} parts of {n}, i.e. {count * n}')
        return a[..., i * n:(i + 1) * n]

    return part


def read_config(directory: str, owner: str) -> Dict:
    """The JSON object of `directory`/config.json."""
    path = os.path.join(os.fspath(directory), 'config.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{owner}.from_pretrained: {path!r} does not exist (expected a Hugging Face model '
                                f'folder holding config.json and model.safetensors)')
    with open(path, encoding='utf-8') as f:
        config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f'{owner}.from_pretrained: {path!r} does not hold a JSON object')
    return config


def check_tied(tensors, head: str, table: str, owner: str):
    """Accepts a stored output head `head` only when it equals the token embedding `table` (the model ties them:
    one variable); a missing table is left for load_tensors to report."""
    if table not in tensors:
        return
    stored, embedding = tensors[head], tensors[table]
    if stored.shape != embedding.shape or not np.array_equal(stored, embedding):
        raise ValueError(f'{owner}.from_pretrained: {head!r} {tuple(stored.shape)} in {tensors.file(head)!r} differs '
                         f'from {table!r} {tuple(embedding.shape)}: {owner} ties its output head to the token '
                         f'embedding (one variable); nothing was loaded')
