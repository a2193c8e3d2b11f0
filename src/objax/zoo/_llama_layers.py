"""The decoder block of the Llama family: grouped-query attention with rotary embeddings, a SwiGLU MLP, RMSNorm;
and the names Hugging Face gives their tensors."""

from typing import Callable, Dict, Optional, Tuple, Union

from jax import lax

from objax import functional
from objax.module import Module
from objax.nn import KVCache, Linear, RMSNorm
from objax.nn.lora import LoRALinear
from objax.typing import JaxArray
from objax.zoo._llama_config import LlamaConfig

__all__ = ['LlamaAttention', 'LlamaBlock', 'LlamaMLP', 'block_tensors', 'linear_tensors', 'project']


def project(layer: Union[Linear, LoRALinear], x: JaxArray, training: bool) -> JaxArray:
    """layer(x), passing `training` to an adapted layer (for its dropout).

    Args:
        layer: a Linear, or a LoRALinear.
        x: input (..., nin).
        training: whether the model is training.

    Returns:
        (..., nout).
    """
    return layer(x, training) if isinstance(layer, LoRALinear) else layer(x)


class LlamaAttention(Module):
    """Causal self attention with rotary position embeddings and grouped-query heads: q_proj, k_proj, v_proj and
    o_proj as in Hugging Face's LlamaAttention (Qwen2: biases on q/k/v only).

    Args:
        config: the model's sizes (hidden_size, num_attention_heads, num_key_value_heads, head_dim, biases).
        w_init: initializer of the projection weights, called with (nin, nout).
    """

    def __init__(self, config: LlamaConfig, w_init: Callable):
        hidden, heads, kv, d = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, \
            config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv, d
        self.q_proj = Linear(hidden, heads * d, use_bias=config.qkv_bias, w_init=w_init)
        self.k_proj = Linear(hidden, kv * d, use_bias=config.qkv_bias, w_init=w_init)
        self.v_proj = Linear(hidden, kv * d, use_bias=config.qkv_bias, w_init=w_init)
        self.o_proj = Linear(heads * d, hidden, use_bias=config.attention_bias, w_init=w_init)

    def init_cache(self, batch: int, max_length: int, dtype) -> KVCache:
        """An empty cache of the key/value heads.

        Args:
            batch: the batch size.
            max_length: the most positions the cache holds.
            dtype: the dtype of the cached keys and values.

        Returns:
            KVCache of shape (batch, max_length, num_kv_heads, head_dim).
        """
        return KVCache.zeros(batch, max_length, self.num_kv_heads, self.head_dim, dtype)

    def __call__(self, x: JaxArray, positions: JaxArray, frequencies: JaxArray, mask: JaxArray,
                 cache: Optional[KVCache] = None, training: bool = False,
                 stacked: Optional[Tuple[JaxArray, JaxArray, JaxArray, JaxArray]] = None):
        """Attention of the T positions of x to themselves, or, with a cache, to the cached positions too.

        Args:
            x: (batch, T, hidden).
            positions: the rotary positions, (T,) or (batch, T).
            frequencies: the rotary inverse frequencies, (head_dim / 2,).
            mask: boolean, True = may attend; broadcastable to (batch, heads, T, keys), keys being the T positions
                or, with a cache, its max_length slots.
            cache: a KVCache to write the T new keys and values into and attend over, or None.
            training: passed to adapted projections (their dropout).
            stacked: instead of a cache, the caches of all the blocks of a Stack: (keys, values, layer, index) with
                keys and values (layers, batch, max_length, num_kv_heads, head_dim), this block's layer number and
                the number of positions filled.

        Returns:
            (output (batch, T, hidden), the updated cache, or the updated (keys, values) with `stacked`, or None).
        """
        b, t = x.shape[:2]
        q = project(self.q_proj, x, training).reshape(b, t, self.num_heads, self.head_dim)
        k = project(self.k_proj, x, training).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = project(self.v_proj, x, training).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = functional.rotary_embedding(q, positions, frequencies=frequencies)
        k = functional.rotary_embedding(k, positions, frequencies=frequencies)
        if cache is not None:
            cache = cache.append(k, v)
            k, v = cache.key.astype(q.dtype), cache.value.astype(q.dtype)
        elif stacked is not None:
            keys, values, layer, index = stacked
            keys = lax.dynamic_update_slice(keys, k[None].astype(keys.dtype), (layer, 0, index, 0, 0))
            values = lax.dynamic_update_slice(values, v[None].astype(values.dtype), (layer, 0, index, 0, 0))
            cache = keys, values
            k, v = keys[layer].astype(q.dtype), values[layer].astype(q.dtype)
        y = functional.dot_product_attention(q, k, v, mask=mask)
        return project(self.o_proj, y.reshape(b, t, self.num_heads * self.head_dim), training), cache


class LlamaMLP(Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)).

    Args:
        config: the model's sizes (hidden_size, intermediate_size, mlp_bias).
        w_init: initializer of the projection weights, called with (nin, nout).
    """

    def __init__(self, config: LlamaConfig, w_init: Callable):
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(hidden, inner, use_bias=bias, w_init=w_init)
        self.up_proj = Linear(hidden, inner, use_bias=bias, w_init=w_init)
        self.down_proj = Linear(inner, hidden, use_bias=bias, w_init=w_init)

    def __call__(self, x: JaxArray, training: bool = False) -> JaxArray:
        """The MLP of each position.

        Args:
            x: (..., hidden).
            training: passed to adapted projections (their dropout).

        Returns:
            (..., hidden).
        """
        h = functional.silu(project(self.gate_proj, x, training)) * project(self.up_proj, x, training)
        return project(self.down_proj, h, training)


class LlamaBlock(Module):
    """x + attention(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).

    Args:
        config: the model's sizes and options.
        w_init: initializer of the projection weights, called with (nin, nout).
    """

    def __init__(self, config: LlamaConfig, w_init: Callable):
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, w_init)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config, w_init)

    def __call__(self, x: JaxArray, *stacked: JaxArray, positions: JaxArray, frequencies: JaxArray,
                 mask: JaxArray, cache: Optional[KVCache] = None, index: Optional[JaxArray] = None,
                 training: bool = False):
        """The block. It takes and returns what an objax.nn.Stack of blocks carries from one block to the next:
        x alone, or, when decoding with the caches of all the blocks, (x, keys, values, layer).

        Args:
            x: (batch, T, hidden).
            *stacked: nothing, or the caches of all the blocks (keys, values) of shape (layers, batch, max_length,
                num_kv_heads, head_dim) and this block's layer number (an int32 scalar).
            positions: the rotary positions, (T,) or (batch, T).
            frequencies: the rotary inverse frequencies, (head_dim / 2,).
            mask: boolean attention mask (see LlamaAttention).
            cache: the block's own KVCache, or None.
            index: with `stacked`, the number of positions the caches hold before this call.
            training: passed to adapted projections (their dropout).

        Returns:
            x after the block (batch, T, hidden); with `cache`, the pair (x, the updated cache); with `stacked`,
            (x, keys, values, layer + 1).
        """
        attend = stacked + (index,) if stacked else None
        h, cache = self.self_attn(self.input_layernorm(x), positions, frequencies, mask, cache, training, attend)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x), training)
        if stacked:
            return (x,) + cache + (stacked[2] + 1,)
        return x if cache is None else (x, cache)


def _transposed(a):
    return a.T


def linear_tensors(prefix: str, layer: Linear) -> Dict[str, object]:
    """The load_tensors targets of one Linear by Hugging Face name: '.weight' is PyTorch's (out, in), the
    transpose of w.

    Args:
        prefix: the layer's Hugging Face name, e.g. 'lm_head'.
        layer: the Linear.

    Returns:
        {prefix.weight: (w, transpose)} and, with a bias, {prefix.bias: b}.
    """
    out = {f'{prefix}.weight': (layer.w, _transposed)}
    if layer.b is not None:
        out[f'{prefix}.bias'] = layer.b
    return out


def block_tensors(prefix: str, block: LlamaBlock) -> Dict[str, object]:
    """The load_tensors targets of one block by Hugging Face tensor name.

    Args:
        prefix: the block's Hugging Face name, e.g. 'model.layers.3'.
        block: the LlamaBlock (without adapters).

    Returns:
        A dict tensor name -> target.
    """
    out = {f'{prefix}.input_layernorm.weight': block.input_layernorm.gamma,
           f'{prefix}.post_attention_layernorm.weight': block.post_attention_layernorm.gamma}
    for name in ('q_proj', 'k_proj', 'v_proj', 'o_proj'):
        out.update(linear_tensors(f'{prefix}.self_attn.{name}', getattr(block.self_attn, name)))
    for name in ('gate_proj', 'up_proj', 'down_proj'):
        out.update(linear_tensors(f'{prefix}.mlp.{name}', getattr(block.mlp, name)))
    return out
