"""Attention: scaled dot-product attention, rotary position embedding and causal masks."""

from typing import Optional, Union

import jax
import jax.numpy as jn

from objax.functional._checks import check_broadcastable, positive_int
from objax.typing import JaxArray

__all__ = ['causal_mask', 'dot_product_attention', 'rotary_embedding']


def dot_product_attention(query: JaxArray, key: JaxArray, value: JaxArray, bias: Optional[JaxArray] = None,
                          mask: Optional[JaxArray] = None, *, is_causal: bool = False, scale: Optional[float] = None,
                          implementation: Optional[str] = None) -> JaxArray:
    """softmax(query . key^T * scale + bias, masked) . value per head, computed by jax.nn.dot_product_attention.

    The logits of query position t and key position s are `scale * <query[b, t, h], key[b, s, h']>` (+ bias),
    where key/value head h' = h // (heads // kv_heads) (grouped-query attention when kv_heads < heads). Positions
    a mask forbids get a large negative logit, so a query whose keys are all masked averages all values.

    Args:
        query: (batch, T, heads, head_dim).
        key: (batch, S, kv_heads, head_dim), kv_heads dividing heads; same dtype as query.
        value: (batch, S, kv_heads, head_dim), the shape and dtype of key.
        bias: optional additive logits, broadcastable to (batch, heads, T, S).
        mask: optional boolean array broadcastable to (batch, heads, T, S); True = the query may attend the key.
        is_causal: query t attends only keys s <= t (aligned at the first position, as in JAX; combined with mask).
        scale: factor of the logits; None gives 1 / sqrt(head_dim).
        implementation: None or 'xla' (any device) or 'cudnn' (NVIDIA GPUs' fused kernel), passed to
            jax.nn.dot_product_attention.

    Returns:
        The attended values, (batch, T, heads, head_dim), dtype of query.

    Raises:
        ValueError: query, key or value not 4D or of mismatched shapes, heads not a multiple of kv_heads, a mask
            that is not boolean, or a mask or bias that does not broadcast to (batch, heads, T, S).
    """
    fn = 'dot_product_attention'
    shapes = {'query': jn.shape(query), 'key': jn.shape(key), 'value': jn.shape(value)}
    for name, shape in shapes.items():
        if len(shape) != 4:
            raise ValueError(f'{fn}: {name} must be 4D (batch, length, heads, head_dim), got shape {shape}')
    (b, t, h, d), (kb, s, kh, kd) = shapes['query'], shapes['key']
    if shapes['value'] != shapes['key']:
        raise ValueError(f'{fn}: value must have the shape of key {shapes["key"]}, got {shapes["value"]}')
    if kb != b or kd != d:
        raise ValueError(f'{fn}: key (batch, S, kv_heads, head_dim) = {shapes["key"]} must share batch and '
                         f'head_dim with query {shapes["query"]}')
    if h % kh:
        raise ValueError(f'{fn}: the query heads ({h}) must be a multiple of the key/value heads ({kh})')
    if mask is not None:
        if jn.result_type(mask) != jn.bool_:
            raise ValueError(f'{fn}: mask must be boolean (True = attend), got dtype {jn.result_type(mask)}; '
                             f'pass additive logits as bias')
        check_broadcastable(fn, 'mask', jn.shape(mask), (b, h, t, s), '(batch, heads, T, S)')
    if bias is not None:
        check_broadcastable(fn, 'bias', jn.shape(bias), (b, h, t, s), '(batch, heads, T, S)')
    return jax.nn.dot_product_attention(query, key, value, bias, mask, is_causal=is_causal, scale=scale,
                                        implementation=implementation)


def rotary_embedding(x: JaxArray, positions: JaxArray, base: float = 10000.0,
                     frequencies: Optional[JaxArray] = None) -> JaxArray:
    """Rotary position embedding (RoPE) in the "rotate half" convention of Hugging Face Llama and GPT-NeoX.

    With d = head_dim and theta_i = positions * base^(-2i / d) for i < d / 2, the pair (x[..., i],
    x[..., i + d/2]) is rotated by the angle theta_i: (x1 cos - x2 sin, x2 cos + x1 sin). The angles are
    computed in float32 (float64 under JAX's 64-bit mode) and the result cast back to x's dtype. `frequencies`
    replaces base^(-2i / d) by other inverse frequencies, e.g. those of Llama 3's or linear rope scaling.

    Args:
        x: queries or keys, (batch, T, heads, head_dim) with an even head_dim.
        positions: the position of each step, numbers of shape (T,) or (batch, T).
        base: the wavelength base of the frequencies.
        frequencies: optional inverse frequencies, shape (head_dim / 2,); `base` is then unused.

    Returns:
        The rotated x, its shape and dtype.

    Raises:
        ValueError: x not 4D, head_dim odd, positions of a shape other than (T,) or (batch, T), or frequencies
            of a shape other than (head_dim / 2,).
    """
    fn = 'rotary_embedding'
    shape = jn.shape(x)
    if len(shape) != 4:
        raise ValueError(f'{fn}: x must be 4D (batch, T, heads, head_dim), got shape {shape}')
    b, t, _, d = shape
    if d % 2:
        raise ValueError(f'{fn}: head_dim (last axis of x) must be even, got {d}')
    if jn.shape(positions) not in ((t,), (b, t)):
        raise ValueError(f'{fn}: positions must have shape (T,) = {(t,)} or (batch, T) = {(b, t)}, '
                         f'got {jn.shape(positions)}')
    dtype = jn.promote_types(jn.result_type(x), jn.float32)
    if frequencies is None:
        inv_freq = base ** (-jn.arange(0, d, 2, dtype=dtype) / d)
    elif jn.shape(frequencies) != (d // 2,):
        raise ValueError(f'{fn}: frequencies must have shape (head_dim / 2,) = {(d // 2,)}, '
                         f'got {jn.shape(frequencies)}')
    else:
        inv_freq = jn.asarray(frequencies, dtype)
    angles = jn.asarray(positions, dtype)[..., None] * inv_freq  # (..., T, d/2)
    angles = jn.concatenate([angles, angles], axis=-1)[..., None, :]  # (..., T, 1, d)
    xf = x.astype(dtype)
    rotated = jn.concatenate([-xf[..., d // 2:], xf[..., :d // 2]], axis=-1)
    return (xf * jn.cos(angles) + rotated * jn.sin(angles)).astype(x.dtype)


def causal_mask(t: int, s: Optional[int] = None, offset: Union[int, JaxArray] = 0) -> JaxArray:
    """Boolean (t, s) mask: query i, at absolute position offset + i, may attend key j iff j <= offset + i.

    Args:
        t: number of queries, a positive int.
        s: number of keys, a positive int; None gives t.
        offset: absolute position of the first query: an int, or an int scalar array (e.g. the filled length of
            a key/value cache, traced under jit).

    Returns:
        Boolean array of shape (t, s).

    Raises:
        ValueError: t or s not a positive int, or offset not a scalar.
    """
    t = positive_int('causal_mask', 't', t)
    s = t if s is None else positive_int('causal_mask', 's', s)
    if jn.ndim(offset) != 0:
        raise ValueError(f'causal_mask: offset must be a scalar, got shape {jn.shape(offset)}')
    return jn.arange(s)[None, :] <= offset + jn.arange(t)[:, None]
