"""GPT-2 (Radford et al., 2019) with Hugging Face's weights: loading, logits, generation with a key/value cache."""

import functools
import os
from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jn
import numpy as np
from jax.sharding import Mesh

from objax import random
from objax.io.pretrained import load_tensors, read_tensors
from objax.jit import Jit
from objax.module import Module, ModuleList
from objax.nn import Embedding, LayerNorm
from objax.nn.init import truncated_normal
from objax.typing import JaxArray
from objax.zoo._transformer import PreNormBlock, check_tied, dropout_layer, maybe_dropout, read_config, split_columns

__all__ = ['GPT2']

# config.json activation_function values meaning gelu with the tanh approximation.
_TANH_GELU = ('gelu_new', 'gelu_pytorch_tanh', 'gelu_fast')
# config.json entries (name, value of the architecture built here) that change the computation otherwise.
_REQUIRED = (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False),
             ('add_cross_attention', False), ('tie_word_embeddings', True))


_NO_KEY = np.zeros(2, np.uint32)  # the (unused) random key of greedy steps


def _normal(stddev: float):
    return functools.partial(truncated_normal, stddev=stddev, lower=-3, upper=3)


class GPT2(Module):
    """The GPT-2 language model (the GPT2LMHeadModel of Hugging Face transformers): token and position
    embeddings, `n_layer` pre-norm blocks of causal self attention and a gelu (tanh approximation) MLP, a final
    LayerNorm and an output head tied to the token embedding (`wte.attend`: one variable for both).

    Attention-probability dropout is not applied; `dropout` acts on the embeddings and the residual branches.

    Example:
        ```
        model = objax.zoo.gpt2.GPT2.from_pretrained('gpt2')  # a folder from huggingface.co/gpt2
        prompt = jn.array([[464, 3290, 318]], jn.int32)  # token ids from the model's tokenizer
        tokens = model.generate(prompt, max_new_tokens=20)  # (1, 23), the prompt and 20 greedy tokens
        logits = model(tokens)  # (1, 23, 50257)
        ```
    """

    def __init__(self, vocab_size: int = 50257, n_positions: int = 1024, n_embd: int = 768, n_layer: int = 12,
                 n_head: int = 12, layer_norm_epsilon: float = 1e-5, dropout: float = 0.0):
        """Creates a randomly initialised GPT-2.

        Args:
            vocab_size: number of tokens.
            n_positions: the longest sequence (the rows of the position embedding).
            n_embd: width of the model; a multiple of `n_head`.
            n_layer: number of blocks.
            n_head: number of attention heads.
            layer_norm_epsilon: epsilon of every LayerNorm.
            dropout: probability of dropping an entry of the embeddings and of each residual branch while
                training (objax Dropout's keep = 1 - dropout).

        Raises:
            ValueError: a size that is not a positive integer, `n_embd` not a multiple of `n_head`, or `dropout`
                outside [0, 1].
        """
        for name, value in (('vocab_size', vocab_size), ('n_positions', n_positions), ('n_embd', n_embd),
                            ('n_layer', n_layer), ('n_head', n_head)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'GPT2: {name} must be a positive integer, got {value!r}')
        if n_embd % n_head:
            raise ValueError(f'GPT2: n_embd ({n_embd}) must be a multiple of n_head ({n_head})')
        if not 0 <= dropout <= 1:
            raise ValueError(f'GPT2: dropout must be in [0, 1], got {dropout!r}')
        self.n_positions, self.n_embd, self.n_head = int(n_positions), int(n_embd), int(n_head)
        self.wte = Embedding(vocab_size, n_embd, w_init=_normal(0.02))
        self.wpe = Embedding(n_positions, n_embd, w_init=_normal(0.01))
        self.drop = dropout_layer(1 - dropout)  # None without dropout: the model then holds no random key
        self.blocks = ModuleList(PreNormBlock(n_embd, n_head, 4 * n_embd, layer_norm_epsilon, causal=True,
                                              approximate=True, keep=1 - dropout) for _ in range(n_layer))
        self.ln_f = LayerNorm(n_embd, eps=layer_norm_epsilon)
        self._compiled = {}  # the decoding step, compiled at the first generate (in a dict: not one of vars())

    def __call__(self, tokens: JaxArray, training: bool = False) -> JaxArray:
        """The next-token logits at each position.

        Args:
            tokens: integer token ids, (batch, time) with time <= n_positions.
            training: apply dropout.

        Returns:
            The logits, (batch, time, vocab_size).

        Raises:
            ValueError: `tokens` is not a 2-D integer array, or longer than n_positions.
        """
        self._check_tokens(tokens, 'tokens')
        return self._forward(tokens, training)[0]

    def _check_tokens(self, tokens, name: str):
        shape = jn.shape(tokens)
        if len(shape) != 2 or not jn.issubdtype(jn.result_type(tokens), jn.integer):
            raise ValueError(f'GPT2: {name} must be integer token ids of shape (batch, time), got '
                             f'{jn.result_type(tokens)} {tuple(shape)}')
        if shape[1] > self.n_positions:
            raise ValueError(f'GPT2: {name} has {shape[1]} positions, the model has {self.n_positions}')

    def _forward(self, tokens: JaxArray, training: bool, caches: Optional[Tuple] = None):
        """(logits, new caches or None); with caches, the tokens follow the cached positions."""
        start = 0 if caches is None else caches[0].index
        positions = start + jn.arange(tokens.shape[1])
        x = maybe_dropout(self.drop, self.wte(tokens) + self.wpe(positions), training)
        new = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, training, None if caches is None else caches[i])
            new.append(cache)
        return self.wte.attend(self.ln_f(x)), None if caches is None else tuple(new)

    def _decode(self) -> Jit:
        """The compiled step (tokens, caches, temperature, key) -> (next tokens (batch,), caches), made once: the
        most likely token when temperature is 0, else one drawn from softmax(logits / temperature) with key."""
        if 'step' not in self._compiled:
            def step(tokens, caches, temperature, key):
                logits, caches = self._forward(tokens, False, caches)
                last = logits[:, -1]
                drawn = jax.random.categorical(key, last / jn.maximum(temperature, 1e-30))
                return jn.where(temperature > 0, drawn, jn.argmax(last, axis=-1)).astype(jn.int32), caches

            self._compiled['step'] = Jit(step, self.vars())
        return self._compiled['step']

    def generate(self, prompt: JaxArray, max_new_tokens: int, temperature: float = 0.0,
                 generator: Optional[random.Generator] = None) -> JaxArray:
        """Continues a batch of prompts token by token, with a key/value cache.

        The prompt fills the cache in one call, then each new token is one call of a step compiled once (for
        a given batch size and prompt plus new length), which attends to the cached positions.

        Args:
            prompt: integer token ids, (batch, P), P >= 1.
            max_new_tokens: number of tokens to add, >= 0; P + max_new_tokens <= n_positions.
            temperature: 0 picks the most likely token (greedy); > 0 samples from softmax(logits / temperature).
            generator: the random generator of sampling (default objax.random.DEFAULT_GENERATOR).

        Returns:
            The prompt followed by the new tokens, int32 (batch, P + max_new_tokens).

        Raises:
            ValueError: a malformed prompt, a negative `max_new_tokens` or `temperature`, or more positions than
                n_positions.
        """
        self._check_tokens(prompt, 'prompt')
        batch, length = jn.shape(prompt)
        if length < 1:
            raise ValueError('GPT2.generate: prompt must hold at least one token per row')
        if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
            raise ValueError(f'GPT2.generate: max_new_tokens must be a non-negative integer, got {max_new_tokens!r}')
        if length + max_new_tokens > self.n_positions:
            raise ValueError(f'GPT2.generate: {length} prompt positions + {max_new_tokens} new tokens exceed '
                             f'the {self.n_positions} positions of the model')
        if not temperature >= 0:
            raise ValueError(f'GPT2.generate: temperature must be >= 0, got {temperature!r}')
        prompt = jn.asarray(prompt, jn.int32)
        if max_new_tokens == 0:
            return prompt
        generator = random.DEFAULT_GENERATOR if generator is None else generator
        keys = (lambda: generator()) if temperature > 0 else (lambda: _NO_KEY)
        step = self._decode()
        dtype = self.wte.w.value.dtype
        caches = tuple(block.attn.init_cache(batch, length + max_new_tokens, dtype) for block in self.blocks)
        temperature = jn.asarray(temperature, jn.float32)
        token, caches = step(prompt, caches, temperature, keys())
        new = [token]
        for _ in range(max_new_tokens - 1):
            token, caches = step(token[:, None], caches, temperature, keys())
            new.append(token)
        return jn.concatenate([prompt, jn.stack(new, axis=1)], axis=1)

    @classmethod
    def from_pretrained(cls, directory: str, mesh: Optional[Mesh] = None, rules=None,
                        dropout: float = 0.0) -> 'GPT2':
        """Loads a GPT-2 saved by Hugging Face transformers (`save_pretrained`, or a folder downloaded from the
        Hub): config.json and model.safetensors (or model.safetensors.index.json and its shards).

        Both layouts are read: GPT2LMHeadModel's (names starting with 'transformer.') and GPT2Model's. The
        stored attention masks ('attn.bias', 'attn.masked_bias') are not weights and are skipped; a stored
        'lm_head.weight' must equal the token embedding (the head is tied to it).

        Args:
            directory: the model folder.
            mesh: if given, each variable goes straight from host memory onto this mesh (see
                objax.io.load_tensors), laid out by `rules`; replicated without them.
            rules: objax.sharding rules over the model's variable names, e.g.
                `[('*.attn(MultiHeadAttention).*(Linear).w', P(None, 'model'))]`.
            dropout: dropout probability for fine-tuning (see GPT2).

        Returns:
            The model, in float32.

        Raises:
            FileNotFoundError: no config.json or no safetensors weights in `directory`.
            ValueError: an unsupported configuration (named: an activation other than gelu with the tanh
                approximation, cross attention, another MLP width...); missing, unexpected or wrong-shaped tensors
                (named, with their shapes and file); an untied output head. Nothing is loaded then.
        """
        config = read_config(directory, 'GPT2')
        _check_config(config, directory)
        model = cls(vocab_size=config['vocab_size'], n_positions=config['n_positions'], n_embd=config['n_embd'],
                    n_layer=config['n_layer'], n_head=config['n_head'],
                    layer_norm_epsilon=config.get('layer_norm_epsilon', 1e-5), dropout=dropout)
        tensors = read_tensors(directory)
        prefix = 'transformer.' if any(k.startswith('transformer.') for k in tensors) else ''
        ignore = [f'{prefix}h.{i}.attn.{b}' for i in range(len(model.blocks)) for b in ('bias', 'masked_bias')]
        if 'lm_head.weight' in tensors:
            check_tied(tensors, 'lm_head.weight', prefix + 'wte.weight', 'GPT2')
            ignore.append('lm_head.weight')
        load_tensors(_targets(model, prefix), tensors, mesh=mesh, rules=rules, vc=model.vars(), ignore=ignore)
        return model


def _targets(model: GPT2, prefix: str) -> Dict[str, object]:
    """Hugging Face tensor name -> variable (GPT-2's Conv1D weights are stored (in, out), as objax's)."""
    out = {f'{prefix}wte.weight': model.wte.w, f'{prefix}wpe.weight': model.wpe.w,
           f'{prefix}ln_f.weight': model.ln_f.gamma, f'{prefix}ln_f.bias': model.ln_f.beta}
    for i, block in enumerate(model.blocks):
        h, attn = f'{prefix}h.{i}.', block.attn
        qkv = (attn.query, attn.key, attn.value)
        out.update({
            h + 'ln_1.weight': block.norm1.gamma, h + 'ln_1.bias': block.norm1.beta,
            h + 'attn.c_attn.weight': [(lin.w, split_columns(model.n_embd, j)) for j, lin in enumerate(qkv)],
            h + 'attn.c_attn.bias': [(lin.b, split_columns(model.n_embd, j)) for j, lin in enumerate(qkv)],
            h + 'attn.c_proj.weight': attn.out.w, h + 'attn.c_proj.bias': attn.out.b,
            h + 'ln_2.weight': block.norm2.gamma, h + 'ln_2.bias': block.norm2.beta,
            h + 'mlp.c_fc.weight': block.fc1.w, h + 'mlp.c_fc.bias': block.fc1.b,
            h + 'mlp.c_proj.weight': block.fc2.w, h + 'mlp.c_proj.bias': block.fc2.b})
    return out


def _check_config(config: Dict, directory: str):
    """Refuses, by name, the config.json entries this implementation does not compute as transformers does."""
    where = f'{os.path.join(os.fspath(directory), "config.json")!r}'
    missing = [k for k in ('vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head') if k not in config]
    if missing:
        raise ValueError(f'GPT2.from_pretrained: {where} lacks {missing}')
    problems: List[str] = []
    activation = config.get('activation_function', 'gelu_new')
    if activation not in _TANH_GELU:
        problems.append(f'activation_function {activation!r} (supported: {", ".join(_TANH_GELU)})')
    inner = config.get('n_inner')
    if inner is not None and inner != 4 * config['n_embd']:
        problems.append(f'n_inner {inner} (supported: None or 4 * n_embd = {4 * config["n_embd"]})')
    for name, value in _REQUIRED:
        if name in config and config[name] != value:
            problems.append(f'{name} {config[name]!r} (supported: {value!r})')
    if problems:
        raise ValueError(f'GPT2.from_pretrained: {where} asks for what this GPT2 does not compute: '
                         + '; '.join(problems))

