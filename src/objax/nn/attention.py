"""Multi-head attention with an optional key/value cache for step-by-step decoding."""

from typing import NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jn
from jax import lax

from objax.functional._checks import check_broadcastable, positive_int
from objax.functional.attention import causal_mask, dot_product_attention
from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn.linear import Linear
from objax.typing import JaxArray

__all__ = ['KVCache', 'MultiHeadAttention']


class KVCache(NamedTuple):
    """The keys and values of the positions an attention layer has seen, for step-by-step decoding.

    A NamedTuple, hence a JAX pytree: pass it to and return it from jitted functions. Made by
    `MultiHeadAttention.init_cache` (or `KVCache.zeros`); each call with the cache returns an updated copy. With
    grouped-query attention it holds the key/value heads, not the query heads.

    Attributes:
        key: the keys, (batch, max_length, kv_heads, head_dim); positions >= index hold zeros.
        value: the values, same shape and dtype as key.
        index: int32 scalar, the number of positions filled (the absolute position of the next token).
    """
    key: JaxArray
    value: JaxArray
    index: JaxArray

    @classmethod
    def zeros(cls, batch: int, max_length: int, kv_heads: int, head_dim: int, dtype=jn.float32) -> 'KVCache':
        """An empty cache: zeros and index 0.

        Args:
            batch: the batch size of the inputs the cache will serve, a positive int.
            max_length: the most positions the cache holds (prompt plus generated tokens), a positive int.
            kv_heads: the number of key/value heads, a positive int.
            head_dim: features per head, a positive int.
            dtype: dtype of the stored keys and values.

        Returns:
            KVCache with key and value of shape (batch, max_length, kv_heads, head_dim) and index 0 (int32).

        Raises:
            ValueError: a size that is not a positive int.
        """
        owner = 'KVCache.zeros'
        shape = tuple(positive_int(owner, name, value) for name, value in (
            ('batch', batch), ('max_length', max_length), ('kv_heads', kv_heads), ('head_dim', head_dim)))
        return cls(jn.zeros(shape, dtype), jn.zeros(shape, dtype), jn.zeros((), jn.int32))

    def append(self, key: JaxArray, value: JaxArray) -> 'KVCache':
        """The cache with `key` and `value` written at positions [index, index + T) and index + T.

        Positions past max_length are not checked under jit (the write would be shifted back into range):
        keep index + T <= max_length.

        Args:
            key: the new keys, (batch, T, kv_heads, head_dim).
            value: the new values, the shape of key.

        Returns:
            The updated KVCache (this one is unchanged).

        Raises:
            ValueError: key or value of another batch, kv_heads or head_dim than the cache, T > max_length, or
                (outside jit) index + T > max_length.
        """
        shape = tuple(jn.shape(self.key))
        for name, new in (('key', key), ('value', value)):
            got = tuple(jn.shape(new))
            if len(got) != 4 or got[0] != shape[0] or got[2:] != shape[2:]:
                raise ValueError(f'KVCache.append: {name} must have shape (batch, T, kv_heads, head_dim) = '
                                 f'({shape[0]}, T, {shape[2]}, {shape[3]}), got {got}')
        t = key.shape[1]
        if t > shape[1]:
            raise ValueError(f'KVCache.append: T ({t} positions) exceeds the cache max_length ({shape[1]})')
        index = jn.asarray(self.index, jn.int32)
        if not isinstance(index, jax.core.Tracer) and int(index) + t > shape[1]:
            raise ValueError(f'KVCache.append: the cache holds {int(index)} of {shape[1]} positions, no room for '
                             f'{t} more')
        keys = lax.dynamic_update_slice(self.key, key.astype(self.key.dtype), (0, index, 0, 0))
        values = lax.dynamic_update_slice(self.value, value.astype(self.value.dtype), (0, index, 0, 0))
        return KVCache(keys, values, index + t)


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention: softmax(q . k^T / sqrt(head_dim)) . v per head, then a projection.

    q = query(x), k = key(context), v = value(context), each split into `num_heads` heads of `head_dim`
    features; the heads' results are concatenated and projected by `out`. The attention itself is
    objax.functional.dot_product_attention (jax.nn.dot_product_attention). vars() lists query, key, value, out,
    each a Linear (b, then w).

    With `num_kv_heads` < `num_heads` (grouped-query attention), key and value project to num_kv_heads heads,
    each serving num_heads // num_kv_heads consecutive query heads (query head h reads key/value head
    h // (num_heads // num_kv_heads), as Hugging Face's `repeat_kv`), and the cache holds the key/value heads.
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: Optional[int] = None, head_dim: Optional[int] = None,
                 use_bias: bool = True, causal: bool = False, num_kv_heads: Optional[int] = None):
        """Creates the Linear sublayers query, key, value and out.

        Args:
            dim: features of the queries' input x and of the output, a positive int.
            num_heads: number of heads, a positive int.
            kv_dim: features of the context (the keys' and values' input); None gives dim.
            head_dim: features per head; None gives dim // num_heads (dim must then be divisible by num_heads).
            use_bias: whether the four Linear layers have biases.
            causal: query t attends only to keys at positions <= t (for the keys of the call's own context,
                aligned at the first position; with a cache, at absolute positions).
            num_kv_heads: number of key/value heads, dividing num_heads; None gives num_heads.

        Raises:
            ValueError: dim, num_heads, kv_dim, head_dim or num_kv_heads not a positive int, head_dim None and dim
                not divisible by num_heads, or num_heads not a multiple of num_kv_heads.
        """
        owner = 'MultiHeadAttention'
        self.dim = positive_int(owner, 'dim', dim)
        self.num_heads = positive_int(owner, 'num_heads', num_heads)
        self.kv_dim = self.dim if kv_dim is None else positive_int(owner, 'kv_dim', kv_dim)
        if head_dim is None:
            if self.dim % self.num_heads:
                raise ValueError(f'{owner}: dim ({dim}) must be divisible by num_heads ({num_heads}) when '
                                 f'head_dim is not given')
            head_dim = self.dim // self.num_heads
        self.head_dim = positive_int(owner, 'head_dim', head_dim)
        self.num_kv_heads = self.num_heads if num_kv_heads is None else positive_int(owner, 'num_kv_heads',
                                                                                      num_kv_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f'{owner}: num_heads ({num_heads}) must be a multiple of num_kv_heads '
                             f'({num_kv_heads})')
        self.causal = bool(causal)
        inner = self.num_heads * self.head_dim
        self.query = Linear(self.dim, inner, use_bias=use_bias)
        self.key = Linear(self.kv_dim, self.num_kv_heads * self.head_dim, use_bias=use_bias)
        self.value = Linear(self.kv_dim, self.num_kv_heads * self.head_dim, use_bias=use_bias)
        self.out = Linear(inner, self.dim, use_bias=use_bias)

    def init_cache(self, batch: int, max_length: int, dtype=jn.float32) -> KVCache:
        """An empty key/value cache (zeros, index 0) for self attention over at most max_length positions.

        Args:
            batch: the batch size of the inputs the cache will serve, a positive int.
            max_length: the most positions the cache holds (prompt plus generated tokens), a positive int.
            dtype: dtype of the stored keys and values.

        Returns:
            KVCache with key and value of shape (batch, max_length, num_kv_heads, head_dim) and index 0 (int32).

        Raises:
            ValueError: batch or max_length not a positive int.
        """
        owner = 'MultiHeadAttention.init_cache'
        return KVCache.zeros(positive_int(owner, 'batch', batch), positive_int(owner, 'max_length', max_length),
                             self.num_kv_heads, self.head_dim, dtype)

    def __call__(self, x: JaxArray, context: Optional[JaxArray] = None, mask: Optional[JaxArray] = None,
                 cache: Optional[KVCache] = None) -> Union[JaxArray, Tuple[JaxArray, KVCache]]:
        """Attention of x's positions to the context's (self attention when context is None).

        With `cache` (self attention only), the keys and values of x's T positions are written at positions
        [index, index + T) of the cache, and the queries attend to the cached positions < index + T: with
        `causal`, query t (absolute position index + t) attends to positions <= index + t. A decode loop calls
        it with T = 1 and a cache of fixed max_length, so under objax.Jit each step has the same shapes and
        compiles once. Positions past max_length are not checked under jit (the write would be shifted back
        into range): keep index + T <= max_length.

        Args:
            x: the queries' input, (batch, T, dim).
            context: the keys' and values' input, (batch, S, kv_dim); None uses x (self attention).
            mask: optional boolean array, True = may attend; broadcastable to (batch, num_heads, T, S), or to
                (batch, num_heads, T, max_length) with a cache (key position = absolute position). A key
                padding mask of shape (batch, S) is given as mask[:, None, None, :]. Combined with `causal`
                and with the cache's filled positions.
            cache: a KVCache from init_cache (or a previous call) to read and extend; None: no cache.

        Returns:
            The output y, (batch, T, dim); with `cache`, the pair (y, the cache with the T new positions and
            index + T).

        Raises:
            ValueError: x or context of the wrong shape, a cache given with a context, a cache of another
                batch, heads or head_dim, T > max_length or (outside jit) index + T > max_length, or a bad mask.
        """
        owner = 'MultiHeadAttention'
        _check_input(owner, 'x', x, self.dim, 'dim')
        batch, t = jn.shape(x)[:2]
        if mask is not None and jn.result_type(mask) != jn.bool_:
            raise ValueError(f'{owner}: mask must be boolean (True = attend), got dtype {jn.result_type(mask)}')
        if context is None:
            context = x
        else:
            if cache is not None:
                raise ValueError(f'{owner}: the cache serves self attention only; got a context with the cache')
            _check_input(owner, 'context', context, self.kv_dim, 'kv_dim', batch)
        q = self.query(x).reshape(batch, -1, self.num_heads, self.head_dim)
        k = self.key(context).reshape(batch, -1, self.num_kv_heads, self.head_dim)
        v = self.value(context).reshape(batch, -1, self.num_kv_heads, self.head_dim)
        if cache is None:
            y = dot_product_attention(q, k, v, mask=mask, is_causal=self.causal)
        else:
            cache = self._write(cache, k, v)
            index = cache.index - t  # the first new position
            max_length = cache.key.shape[1]
            if self.causal:
                allowed = causal_mask(t, max_length, offset=index)
            else:
                allowed = jn.broadcast_to(jn.arange(max_length) < cache.index, (t, max_length))
            if mask is not None:
                check_broadcastable(owner, 'mask', jn.shape(mask), (batch, self.num_heads, t, max_length),
                                    '(batch, num_heads, T, max_length) with a cache')
                allowed = jn.logical_and(allowed, mask)
            y = dot_product_attention(q, cache.key.astype(q.dtype), cache.value.astype(q.dtype), mask=allowed)
        y = self.out(y.reshape(batch, t, self.num_heads * self.head_dim))
        return y if cache is None else (y, cache)

    def _write(self, cache: KVCache, k: JaxArray, v: JaxArray) -> KVCache:
        """The cache with k and v (batch, T, kv_heads, head_dim) written at [index, index + T) and index + T."""
        owner = 'MultiHeadAttention'
        if not isinstance(cache, KVCache):
            raise ValueError(f'{owner}: cache must be a KVCache (from init_cache), got {type(cache).__name__}')
        batch = k.shape[0]
        expected = (batch, None, self.num_kv_heads, self.head_dim)
        shape = tuple(jn.shape(cache.key))
        if len(shape) != 4 or any(e is not None and e != s for e, s in zip(expected, shape)) \
                or tuple(jn.shape(cache.value)) != shape:
            raise ValueError(f'{owner}: cache key and value must have shape (batch, max_length, num_kv_heads, '
                             f'head_dim) = ({batch}, max_length, {self.num_kv_heads}, {self.head_dim}), got '
                             f'{shape} and {tuple(jn.shape(cache.value))}')
        try:
            return cache.append(k, v)
        except ValueError as e:
            raise ValueError(str(e).replace('KVCache.append', owner)) from None

    def __repr__(self):
        extra = {} if self.num_kv_heads == self.num_heads else {'num_kv_heads': self.num_kv_heads}
        return layer_repr(self, dim=self.dim, num_heads=self.num_heads, kv_dim=self.kv_dim, head_dim=self.head_dim,
                          use_bias=self.query.b is not None, causal=self.causal, **extra)


def _check_input(owner: str, name: str, x: JaxArray, features: int, what: str, batch: Optional[int] = None):
    """Refuses an input that is not (batch, length, features)."""
    shape = tuple(jn.shape(x))
    if len(shape) != 3 or shape[2] != features or (batch is not None and shape[0] != batch):
        need = f'({batch if batch is not None else "batch"}, length, {what}={features})'
        raise ValueError(f'{owner}: {name} must have shape {need}, got {shape}')
