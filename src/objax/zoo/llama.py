"""Llama-family language models (Llama 2 and 3, Qwen2 and 2.5, Mistral, SmolLM...) with Hugging Face's weights:
loading, logits, generation with a key/value cache, LoRA adapters in PEFT's format, and saving back."""

import functools
import os
from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jn
from jax.sharding import Mesh

from objax import random
from objax.functional import causal_mask
from objax.io.pretrained import load_tensors, read_tensors
from objax.module import Module, ModuleList
from objax.nn import Embedding, KVCache, Linear, RMSNorm, Stack
from objax.typing import JaxArray
from objax.zoo._llama_config import LlamaConfig
from objax.zoo._llama_generate import LlamaGeneration
from objax.zoo._llama_hub import LlamaHub, model_tensors
from objax.zoo._llama_layers import LlamaBlock, project
from objax.zoo._transformer import check_tied

__all__ = ['Llama', 'LlamaConfig']


def _initializer(stddev: Optional[float], dtype) -> Callable:
    if stddev is None:
        return lambda shape: jn.zeros(shape, dtype)
    return lambda shape: (random.normal(shape, stddev=stddev)).astype(dtype)


class Llama(LlamaGeneration, LlamaHub, Module):
    """A decoder-only language model of the Llama family (transformers' LlamaForCausalLM, Qwen2ForCausalLM and
    MistralForCausalLM): a token embedding, `num_hidden_layers` pre-norm blocks (RMSNorm; causal self attention
    with rotary embeddings and grouped-query heads; a SwiGLU MLP), a final RMSNorm and an output head, tied to
    the token embedding (one variable) when `config.tie_word_embeddings`.

    The attributes follow Hugging Face's names: `embed_tokens`, `layers[i].self_attn.q_proj`... (`lm_head` is None
    when tied), so that LoRA targets and PEFT adapters use the same names.

    Example:
        ```
        model = Llama.from_pretrained('Llama-3.2-1B', dtype=jn.bfloat16)  # a Hugging Face folder
        out = model.generate([jn.array([128000, 791, 7438]), jn.array([128000, 40])], max_new_tokens=20)
        logits = model(jn.array([[128000, 791, 7438]]))  # (1, 3, 128256)
        ```
    """

    def __init__(self, config: LlamaConfig, dtype=None, initializer_range: Optional[float] = 0.02,
                 remat: bool = False, stack: bool = False):
        """Creates a model of the given configuration.

        Args:
            config: the sizes and options.
            dtype: the dtype of every variable; None gives float32 (jnp.bfloat16 holds the weights in bfloat16 and
                computes in bfloat16, normalizations and rotary angles in float32).
            initializer_range: standard deviation of the normal draws of the weights (transformers' default);
                None fills them with zeros (as `from_pretrained` does before loading).
            remat: recompute each block's activations in the backward pass (jax.checkpoint around each block)
                instead of keeping them: training keeps only each block's input (batch, time, hidden).
            stack: hold the blocks in an objax.nn.Stack (each variable stacked over the layers, one scanned body):
                tracing and compiling cost one block whatever the depth. Otherwise a ModuleList.

        Raises:
            TypeError: config is not a LlamaConfig.
            ValueError: dtype is not a floating-point dtype.
        """
        if not isinstance(config, LlamaConfig):
            raise TypeError(f'Llama: config must be a LlamaConfig, got {type(config).__name__}')
        dtype = jn.dtype(jn.float32 if dtype is None else dtype)
        if not jn.issubdtype(dtype, jn.floating):
            raise ValueError(f'Llama: dtype must be a floating-point dtype, got {dtype}')
        init = _initializer(initializer_range, dtype)
        self.config, self.remat = config, bool(remat)
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, w_init=init)
        blocks = [LlamaBlock(config, init) for _ in range(config.num_hidden_layers)]
        self.layers = Stack.from_layers(blocks, remat=remat) if stack else ModuleList(blocks)
        del blocks
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else \
            Linear(config.hidden_size, config.vocab_size, use_bias=False, w_init=init)
        for var in self.vars().values():
            if var.value.dtype != dtype:
                var.assign(var.value.astype(dtype))
        self.eos_token_id, self.pad_token_id = config.eos_token_id, config.pad_token_id
        self.source_directory: Optional[str] = None
        self._compiled = {}  # the decoding step, compiled at the first generate (in a dict: not one of vars())

    @property
    def dtype(self):
        """The dtype of the weights."""
        return self.embed_tokens.w.value.dtype

    def __call__(self, tokens: JaxArray, training: bool = False,
                 attention_mask: Optional[JaxArray] = None) -> JaxArray:
        """The next-token logits at each position.

        Args:
            tokens: integer token ids, (batch, time).
            training: apply the dropout of LoRA adapters (the model itself has none).
            attention_mask: optional (batch, time), 1 (or True) for real tokens and 0 for padding: padded keys are
                never attended, and each row's positions count its real tokens only (cumsum(mask) - 1, as in
                transformers' generate), so a left-padded row gives the logits of the row alone.

        Returns:
            The logits, (batch, time, vocab_size), in the model's dtype.

        Raises:
            ValueError: tokens not a 2-D integer array, or an attention_mask of another shape.
        """
        tokens = self._checked_tokens(tokens)
        b, t = tokens.shape
        allowed = causal_mask(t)[None, None]
        if attention_mask is None:
            positions = jn.arange(t)
        else:
            if tuple(jn.shape(attention_mask)) != (b, t):
                raise ValueError(f'Llama: attention_mask must have the shape of tokens {(b, t)}, got '
                                 f'{tuple(jn.shape(attention_mask))}')
            real = jn.asarray(attention_mask).astype(bool)
            positions = jn.maximum(jn.cumsum(real, axis=1) - 1, 0)
            allowed = allowed & real[:, None, None, :]
        x, _ = self._decoder(self.embed_tokens(tokens), positions, allowed, None, training)
        return self._head(x, training)

    @staticmethod
    def _checked_tokens(tokens) -> JaxArray:
        shape = jn.shape(tokens)
        if len(shape) != 2 or not jn.issubdtype(jn.result_type(tokens), jn.integer):
            raise ValueError(f'Llama: tokens must be integer token ids of shape (batch, time), got '
                             f'{jn.result_type(tokens)} {tuple(shape)}')
        return jn.asarray(tokens)

    def _decoder(self, x: JaxArray, positions: JaxArray, mask: JaxArray, caches: Optional[Tuple],
                 training: bool) -> Tuple[JaxArray, Optional[Tuple]]:
        """(x after the blocks, the updated caches or None)."""
        kwargs = dict(positions=positions, frequencies=self.config.frequencies(positions), mask=mask,
                      training=training)
        if isinstance(self.layers, Stack):
            if caches is None:
                return self.layers(x, **kwargs), None
            x, keys, values, _ = self.layers(x, caches.key, caches.value, jn.zeros((), jn.int32), index=caches.index,
                                             **kwargs)
            return x, KVCache(keys, values, caches.index + x.shape[1])
        if caches is None:
            for block in self.layers:
                call = functools.partial(block, **kwargs)
                x = jax.checkpoint(call)(x) if self.remat else call(x)
            return x, None
        new = []
        for block, cache in zip(self.layers, caches):
            x, cache = block(x, cache=cache, **kwargs)
            new.append(cache)
        return x, tuple(new)

    def _caches(self, batch: int, length: int):
        """Empty key/value caches for generation: one KVCache per block, or one holding all the layers of a
        Stack, (layers, batch, length, num_kv_heads, head_dim)."""
        if isinstance(self.layers, Stack):
            c = self.config
            shape = (c.num_hidden_layers, batch, length, c.num_key_value_heads, c.head_dim)
            return KVCache(jn.zeros(shape, self.dtype), jn.zeros(shape, self.dtype), jn.zeros((), jn.int32))
        return tuple(block.self_attn.init_cache(batch, length, self.dtype) for block in self.layers)

    def _head(self, x: JaxArray, training: bool) -> JaxArray:
        h = self.norm(x)
        return self.embed_tokens.attend(h) if self.lm_head is None else project(self.lm_head, h, training)

    @classmethod
    def from_pretrained(cls, directory: str, dtype=None, mesh: Optional[Mesh] = None, rules=None,
                        remat: bool = False, stack: bool = False) -> 'Llama':
        """Loads a model saved by Hugging Face transformers (`save_pretrained`, or a folder downloaded from the
        Hub): config.json (transformers 5's `rope_parameters` or the earlier `rope_theta` + `rope_scaling`) and
        model.safetensors, or model.safetensors.index.json with its shards, in float32, bfloat16 or float16.

        Tensors are read one at a time and converted to `dtype` as they are loaded (peak host memory about one
        model). Everything is checked before anything is assigned: a refused directory loads nothing.

        Args:
            directory: the model folder.
            dtype: the dtype of the variables; None gives float32, jnp.bfloat16 holds the weights in bfloat16.
            mesh: if given, each variable goes straight from host memory onto this mesh (see
                objax.io.load_tensors), laid out by `rules`; replicated without them.
            rules: objax.sharding rules over the model's variable names, e.g.
                `[('*.q_proj(Linear).w', P(None, 'model'))]`.
            remat: recompute each block's activations in the backward pass (see Llama).
            stack: hold the blocks in an objax.nn.Stack (see Llama); the blocks are loaded one by one, then
                stacked (the blocks' weights are held twice while they are stacked). Not with `mesh` yet.

        Returns:
            The model; its eos_token_id and pad_token_id come from config.json, overridden by
            generation_config.json.

        Raises:
            FileNotFoundError: no config.json, no safetensors weights, or a shard the index names is missing.
            ValueError: an unsupported configuration (named with its value: model_type other than llama, qwen2 or
                mistral; a rope type other than default, llama3, linear or dynamic; a sliding window...); missing,
                unexpected or wrong-shaped tensors (named, with their shapes and file); a stored lm_head that
                differs from a tied embedding; stack with mesh.
        """
        if stack and mesh is not None:
            raise ValueError('Llama.from_pretrained: stack=True with a mesh is not supported yet (load onto the '
                             'mesh without stack)')
        config = LlamaConfig.from_pretrained(directory)
        tensors = read_tensors(directory)
        model = cls(config, dtype=dtype, initializer_range=None, remat=remat)
        ignore = [name for name in tensors if name.endswith('.rotary_emb.inv_freq')]  # older transformers' buffers
        if config.tie_word_embeddings and 'lm_head.weight' in tensors:
            check_tied(tensors, 'lm_head.weight', 'model.embed_tokens.weight', 'Llama')
            ignore.append('lm_head.weight')
        load_tensors(model_tensors(model), tensors, mesh=mesh, rules=rules, vc=model.vars(), ignore=ignore)
        if stack:
            model.layers = Stack.from_layers(list(model.layers), remat=remat)
        model.source_directory = os.fspath(directory)
        return model

