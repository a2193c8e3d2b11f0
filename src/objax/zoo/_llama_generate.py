"""Generation for the Llama family: left-padded batches of prompts of different lengths, a key/value cache of the
key/value heads, a decoding step compiled once, greedy or sampled (temperature, top-k, top-p) tokens, and a stop at
the end-of-sequence tokens."""

from typing import List, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jn
import numpy as np
from jax import lax

from objax import random
from objax.functional import causal_mask
from objax.jit import Jit
from objax.nn import KVCache
from objax.typing import JaxArray
from objax.zoo._llama_config import token_ids

__all__ = ['LlamaGeneration', 'choose_tokens']

_NO_KEY = np.zeros(2, np.uint32)  # the (unused) random key of greedy steps


def _filtered(logits: JaxArray, top_k: JaxArray, top_p: JaxArray) -> JaxArray:
    """logits (batch, vocab) with -inf outside the top_k largest (0: all) and outside the smallest set of largest
    whose probabilities reach top_p (1: all), as transformers' TopK and TopP warpers."""
    vocab = logits.shape[-1]
    ordered = -jn.sort(-logits, axis=-1)
    k = jn.where(top_k > 0, jn.minimum(top_k, vocab), vocab)
    logits = jn.where(logits < ordered[:, k - 1][:, None], -jn.inf, logits)
    ordered = jn.where(jn.arange(vocab) < k, ordered, -jn.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    keep = jn.maximum(jn.sum(jn.cumsum(probs, axis=-1) - probs < top_p, axis=-1), 1)
    threshold = jn.take_along_axis(ordered, (keep - 1)[:, None], axis=-1)
    return jn.where((top_p < 1) & (logits < threshold), -jn.inf, logits)


def choose_tokens(logits: JaxArray, temperature: JaxArray, top_k: JaxArray, top_p: JaxArray,
                  key: JaxArray) -> JaxArray:
    """The next token of each row: the most likely when temperature is 0, else one drawn from
    softmax(logits / temperature) restricted to the top_k tokens and to the top_p nucleus (transformers' warpers,
    in that order). Traceable: every argument may be a traced array, so one compiled step serves all settings.

    Args:
        logits: (batch, vocab).
        temperature: scalar; 0 is greedy.
        top_k: int32 scalar; 0 keeps every token.
        top_p: float scalar in (0, 1]; 1 keeps every token.
        key: the random key of the draw (unused when greedy).

    Returns:
        int32 (batch,).
    """
    def sample(_):
        scaled = logits.astype(jn.float32) / jn.maximum(temperature, 1e-30)
        return jax.random.categorical(key, _filtered(scaled, top_k, top_p)).astype(jn.int32)

    return lax.cond(temperature > 0, sample, lambda _: jn.argmax(logits, axis=-1).astype(jn.int32), None)


def _rows(prompts) -> Tuple[List[np.ndarray], bool]:
    """The prompts as a list of 1-D int32 arrays, and whether they came as one (batch, time) array."""
    if isinstance(prompts, (list, tuple)):
        rows = [np.asarray(p) for p in prompts]
        if not rows or any(r.ndim != 1 or not np.issubdtype(r.dtype, np.integer) or r.size == 0 for r in rows):
            raise ValueError('Llama.generate: prompts must be a non-empty list of non-empty 1-D integer arrays, or '
                             'an integer array (batch, time)')
        return [r.astype(np.int32) for r in rows], False
    shape = jn.shape(prompts)
    if len(shape) != 2 or not jn.issubdtype(jn.result_type(prompts), jn.integer) or 0 in shape:
        raise ValueError(f'Llama.generate: prompts must be an integer array (batch, time) with time >= 1, or a list '
                         f'of 1-D prompts; got {jn.result_type(prompts)} {tuple(shape)}')
    return list(np.asarray(prompts, np.int32)), True


def _checked(max_new_tokens, temperature, top_k, top_p) -> Tuple[int, float, int, float]:
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 0:
        raise ValueError(f'Llama.generate: max_new_tokens must be a non-negative integer, got {max_new_tokens!r}')
    if not temperature >= 0:
        raise ValueError(f'Llama.generate: temperature must be >= 0, got {temperature!r}')
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f'Llama.generate: top_k must be a positive integer or None, got {top_k!r}')
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f'Llama.generate: top_p must be in (0, 1] or None, got {top_p!r}')
    return int(max_new_tokens), float(temperature), 0 if top_k is None else int(top_k), \
        1.0 if top_p is None else float(top_p)


class LlamaGeneration:
    """generate() of Llama (a part of objax.zoo.llama.Llama)."""

    def _eos_and_pad(self) -> Tuple[np.ndarray, int]:
        eos = token_ids(self.eos_token_id)
        pad = self.pad_token_id if self.pad_token_id is not None else (eos[0] if eos else 0)
        return np.array(eos or [-1], np.int32), int(pad)

    def _decode_step(self) -> Jit:
        """The compiled step, made again when the model's variables change (e.g. adapters added or merged)."""
        variables = self.vars()
        ids = tuple(id(v) for v in variables.values())
        if self._compiled.get('ids') != ids:
            def step(tokens, positions, key_mask, caches, done, eos, pad, temperature, top_k, top_p, key):
                t, length = tokens.shape[1], key_mask.shape[1]
                index = caches.index if isinstance(caches, KVCache) else caches[0].index
                mask = causal_mask(t, length, offset=index)[None, None] & key_mask[:, None, None, :]
                x, caches = self._decoder(self.embed_tokens(tokens), positions, mask, caches, False)
                token = choose_tokens(self._head(x[:, -1], False), temperature, top_k, top_p, key)
                token = jn.where(done, pad, token)[:, None]
                return token, positions[:, -1:] + 1, caches, done | jn.any(token == eos[None], axis=1)

            self._compiled.clear()
            self._compiled.update(ids=ids, step=Jit(step, variables))
        return self._compiled['step']

    def generate(self, prompts: Union[JaxArray, Sequence[JaxArray]], max_new_tokens: int, temperature: float = 0.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 generator: Optional[random.Generator] = None) -> Union[JaxArray, List[JaxArray]]:
        """Continues prompts token by token with a key/value cache, as transformers' generate does.

        Prompts of different lengths are left-padded into one batch: padded positions are never attended, and
        each row's positions start at its first real token. The prompts fill the cache (of the key/value heads)
        in one call; each new token is one call of a step compiled once (per batch size and cache length). A row
        stops at the end-of-sequence token (`model.eos_token_id`: an int, a list of ints or None, read from the
        config); the loop ends when every row has stopped.

        Args:
            prompts: an integer array (batch, time), or a list of 1-D integer arrays of different lengths.
            max_new_tokens: the most tokens to add to each prompt, >= 0.
            temperature: 0 picks the most likely token (greedy); > 0 samples from softmax(logits / temperature).
            top_k: when sampling, only the k most likely tokens may be drawn (None: all).
            top_p: when sampling, only the smallest set of most likely tokens whose probability reaches top_p may
                be drawn (None: all).
            generator: the random generator of sampling (default objax.random.DEFAULT_GENERATOR).

        Returns:
            For an array: int32 (batch, time + max_new_tokens), each row's tokens after its end-of-sequence token
            being `model.pad_token_id` (else the first eos token). For a list: a list of int32 arrays, each prompt
            followed by its new tokens, up to and including its end-of-sequence token.

        Raises:
            ValueError: malformed prompts, a negative max_new_tokens or temperature, top_k < 1 or top_p outside
                (0, 1].
        """
        rows, as_array = _rows(prompts)
        new, temperature, top_k, top_p = _checked(max_new_tokens, temperature, top_k, top_p)
        eos, pad = self._eos_and_pad()
        lengths = [len(r) for r in rows]
        batch, width = len(rows), max(lengths)
        tokens = np.full((batch, width), pad, np.int32)
        real = np.zeros((batch, width + new), bool)
        for i, row in enumerate(rows):
            tokens[i, width - len(row):] = row
            real[i, width - len(row):] = True
        real[:, width:] = True
        positions = np.maximum(np.cumsum(real[:, :width], axis=1) - 1, 0).astype(np.int32)
        generated = np.zeros((batch, 0), np.int32)
        if new:
            generated = self._loop(tokens, positions, real, new, eos, pad, (temperature, top_k, top_p), generator)
        if as_array:
            filled = np.full((batch, new - generated.shape[1]), pad, np.int32)
            return jn.asarray(np.concatenate([tokens, generated, filled], axis=1))
        out = []
        for row, tail in zip(rows, generated):
            stops = np.flatnonzero(np.isin(tail, eos))
            out.append(jn.asarray(np.concatenate([row, tail[:stops[0] + 1] if stops.size else tail])))
        return out

    def _loop(self, tokens: np.ndarray, positions: np.ndarray, real: np.ndarray, new: int, eos: np.ndarray,
              pad: int, sampling: Tuple[float, int, float], generator: Optional[random.Generator]) -> np.ndarray:
        """The new tokens (batch, n <= new): fewer when every row stopped early."""
        temperature, top_k, top_p = sampling
        generator = random.DEFAULT_GENERATOR if generator is None else generator
        keys = (lambda: generator()) if temperature > 0 else (lambda: _NO_KEY)
        step = self._decode_step()
        batch = tokens.shape[0]
        caches = self._caches(batch, real.shape[1])
        args = (jn.asarray(eos), jn.asarray(pad, jn.int32), jn.asarray(temperature, jn.float32),
                jn.asarray(top_k, jn.int32), jn.asarray(top_p, jn.float32))
        real, stop = jn.asarray(real), bool((eos >= 0).any())
        token, position, caches, done = step(tokens, positions, real, caches, jn.zeros(batch, bool), *args, keys())
        out = [token]
        for _ in range(new - 1):
            if stop and bool(done.all()):
                break
            token, position, caches, done = step(token, position, real, caches, done, *args, keys())
            out.append(token)
        return np.asarray(jn.concatenate(out, axis=1))
