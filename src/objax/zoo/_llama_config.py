"""The configuration of a Llama-family model: reading Hugging Face's config.json (both layouts), refusing what is
not computed, writing it back, and the rotary frequencies of each rope type."""

import copy
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Union

import jax.numpy as jn
import numpy as np

from objax.typing import JaxArray

__all__ = ['LlamaConfig', 'MODEL_TYPES', 'ROPE_TYPES', 'token_ids']

MODEL_TYPES = ('llama', 'qwen2', 'mistral')
ROPE_TYPES = ('default', 'llama3', 'linear', 'dynamic')
_ARCHITECTURES = {'llama': 'LlamaForCausalLM', 'qwen2': 'Qwen2ForCausalLM', 'mistral': 'MistralForCausalLM'}
# The rope parameters each rope type needs besides rope_theta.
_ROPE_NEEDS = {'default': (), 'linear': ('factor',), 'dynamic': ('factor',),
               'llama3': ('factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings')}
_FLOATS = {'float32': jn.float32, 'bfloat16': jn.bfloat16, 'float16': jn.float16}


class LlamaConfig:
    """The sizes and options of a Llama-family model (Llama 2 and 3, Qwen2 and 2.5, Mistral, SmolLM...), named as in
    Hugging Face's config.json.

    Args:
        vocab_size: number of tokens.
        hidden_size: width of the model.
        intermediate_size: width of the SwiGLU MLP.
        num_hidden_layers: number of decoder blocks.
        num_attention_heads: number of query heads.
        num_key_value_heads: number of key/value heads (grouped-query attention); None gives num_attention_heads.
        head_dim: features per head; None gives hidden_size // num_attention_heads.
        rms_norm_eps: epsilon of every RMSNorm.
        rope_theta: the wavelength base of the rotary embedding.
        rope_scaling: None (rope type 'default') or a dict with 'rope_type' ('default', 'llama3', 'linear' or
            'dynamic') and its parameters ('factor'; for llama3 also 'low_freq_factor', 'high_freq_factor' and
            'original_max_position_embeddings').
        max_position_embeddings: the context length the model was trained for (used by the 'dynamic' rope).
        tie_word_embeddings: the output head is the token embedding (one variable).
        attention_bias: biases on the query, key, value and output projections (Llama's option).
        qkv_bias: biases on the query, key and value projections only (Qwen2); None gives attention_bias.
        mlp_bias: biases on the MLP's three projections.
        model_type: 'llama', 'qwen2' or 'mistral' (what save_pretrained writes; the computation is the same).
        bos_token_id: the beginning-of-sequence token, or None.
        eos_token_id: the end-of-sequence token(s) that stop generation: an int, a list of ints or None.
        pad_token_id: the token generation writes after a row's end, or None (then the first eos token, else 0).

    Raises:
        ValueError: a size that is not a positive integer, heads that do not divide, or an unknown rope type.
    """

    def __init__(self, vocab_size: int = 32000, hidden_size: int = 4096, intermediate_size: int = 11008,
                 num_hidden_layers: int = 32, num_attention_heads: int = 32, num_key_value_heads: Optional[int] = None,
                 head_dim: Optional[int] = None, rms_norm_eps: float = 1e-6, rope_theta: float = 10000.0,
                 rope_scaling: Optional[Dict] = None, max_position_embeddings: int = 2048,
                 tie_word_embeddings: bool = False, attention_bias: bool = False, qkv_bias: Optional[bool] = None,
                 mlp_bias: bool = False, model_type: str = 'llama', bos_token_id: Optional[int] = None,
                 eos_token_id: Union[int, Sequence[int], None] = None, pad_token_id: Optional[int] = None):
        num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        head_dim = hidden_size // num_attention_heads if head_dim is None else head_dim
        for name, value in (('vocab_size', vocab_size), ('hidden_size', hidden_size),
                            ('intermediate_size', intermediate_size), ('num_hidden_layers', num_hidden_layers),
                            ('num_attention_heads', num_attention_heads), ('num_key_value_heads', num_key_value_heads),
                            ('head_dim', head_dim), ('max_position_embeddings', max_position_embeddings)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'LlamaConfig: {name} must be a positive integer, got {value!r}')
        if num_attention_heads % num_key_value_heads:
            raise ValueError(f'LlamaConfig: num_attention_heads ({num_attention_heads}) must be a multiple of '
                             f'num_key_value_heads ({num_key_value_heads})')
        if head_dim % 2:
            raise ValueError(f'LlamaConfig: head_dim must be even (rotary embedding), got {head_dim}')
        if model_type not in MODEL_TYPES:
            raise ValueError(f'LlamaConfig: model_type {model_type!r} (supported: {", ".join(MODEL_TYPES)})')
        self.vocab_size, self.hidden_size, self.intermediate_size = int(vocab_size), int(hidden_size), \
            int(intermediate_size)
        self.num_hidden_layers, self.num_attention_heads = int(num_hidden_layers), int(num_attention_heads)
        self.num_key_value_heads, self.head_dim = int(num_key_value_heads), int(head_dim)
        self.rms_norm_eps, self.rope_theta = float(rms_norm_eps), float(rope_theta)
        self.rope_scaling = _checked_rope(dict(rope_scaling or {'rope_type': 'default'}), 'LlamaConfig')
        self.max_position_embeddings = int(max_position_embeddings)
        self.tie_word_embeddings, self.attention_bias = bool(tie_word_embeddings), bool(attention_bias)
        self.qkv_bias = self.attention_bias if qkv_bias is None else bool(qkv_bias)
        self.mlp_bias, self.model_type = bool(mlp_bias), model_type
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id
        self.source: Optional[Dict] = None  # the config.json this was read from (kept by save_pretrained)

    @property
    def rope_type(self) -> str:
        """The rope type: 'default', 'llama3', 'linear' or 'dynamic'."""
        return self.rope_scaling['rope_type']

    def frequencies(self, positions: Optional[JaxArray] = None) -> JaxArray:
        """The inverse frequencies of the rotary embedding, as Hugging Face transformers computes them.

        Args:
            positions: the positions of the call (any shape): the 'dynamic' rope depends on the longest sequence,
                max(positions) + 1 (NTK scaling beyond max_position_embeddings); the other types ignore them.

        Returns:
            float32 array (head_dim / 2,).
        """
        return _frequencies(self.head_dim, self.rope_theta, self.rope_scaling, self.max_position_embeddings,
                            positions)

    @classmethod
    def from_dict(cls, config: Dict, where: str = 'config.json') -> 'LlamaConfig':
        """Reads a Hugging Face config.json object: transformers 5's layout (`rope_parameters` holding
        `rope_theta`) or the earlier one published checkpoints carry (`rope_theta` and `rope_scaling` at the top).

        Args:
            config: the JSON object.
            where: the file's name, for messages.

        Returns:
            The LlamaConfig (its `source` keeps `config`, which save_pretrained writes back).

        Raises:
            ValueError: a missing size, or what this model does not compute, each named with its value: another
                model_type, rope type or activation, a sliding window, partial rotary embeddings, quantized
                weights, layers of another kind.
        """
        owner = f'Llama.from_pretrained: {where}'
        missing = [k for k in ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
                               'num_attention_heads') if k not in config]
        if missing:
            raise ValueError(f'{owner} lacks {missing}')
        model_type = config.get('model_type', 'llama')
        rope = _rope_of(config)
        problems = _unsupported(config, model_type) + [p for p in [_rope_problem(rope)] if p]
        if problems:
            raise ValueError(f'{owner} asks for what Llama does not compute: ' + '; '.join(problems))
        qwen2 = model_type == 'qwen2'
        out = cls(vocab_size=config['vocab_size'], hidden_size=config['hidden_size'],
                  intermediate_size=config['intermediate_size'], num_hidden_layers=config['num_hidden_layers'],
                  num_attention_heads=config['num_attention_heads'],
                  num_key_value_heads=config.get('num_key_value_heads'), head_dim=config.get('head_dim'),
                  rms_norm_eps=config.get('rms_norm_eps', 1e-6), rope_theta=rope.pop('rope_theta', 10000.0),
                  rope_scaling=rope, max_position_embeddings=config.get('max_position_embeddings', 2048),
                  tie_word_embeddings=config.get('tie_word_embeddings', False),
                  attention_bias=config.get('attention_bias', False), qkv_bias=True if qwen2 else None,
                  mlp_bias=config.get('mlp_bias', False), model_type=model_type,
                  bos_token_id=config.get('bos_token_id'), eos_token_id=config.get('eos_token_id'),
                  pad_token_id=config.get('pad_token_id'))
        out.source = copy.deepcopy(config)
        return out

    @classmethod
    def from_pretrained(cls, directory: str) -> 'LlamaConfig':
        """Reads `directory`/config.json (and the token ids of generation_config.json, which take precedence, as
        in transformers' generate).

        Args:
            directory: a Hugging Face model folder.

        Returns:
            The LlamaConfig.

        Raises:
            FileNotFoundError: no config.json.
            ValueError: see `from_dict`.
        """
        path = os.path.join(os.fspath(directory), 'config.json')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'Llama.from_pretrained: {path!r} does not exist (expected a Hugging Face model '
                                    f'folder holding config.json and model.safetensors)')
        config = cls.from_dict(_read_object(path), repr(path))
        generation = os.path.join(os.fspath(directory), 'generation_config.json')
        if os.path.isfile(generation):
            for name, value in _read_object(generation).items():
                if name in ('bos_token_id', 'eos_token_id', 'pad_token_id') and value is not None:
                    setattr(config, name, value)
        return config

    def to_dict(self, dtype=jn.float32) -> Dict:
        """The config.json that transformers reads back as this configuration: the one it was read from, updated,
        or (for a config made here) the layout with `rope_theta` and `rope_scaling` at the top, which
        transformers 4 and 5 both read.

        Args:
            dtype: the dtype of the saved weights.

        Returns:
            A JSON-serializable dict.
        """
        name = next((k for k, v in _FLOATS.items() if jn.dtype(v) == jn.dtype(dtype)), 'float32')
        out = copy.deepcopy(self.source) if self.source is not None else {}
        rope = dict(self.rope_scaling)
        if 'rope_parameters' in out:
            out['rope_parameters'] = dict(rope, rope_theta=self.rope_theta)
        else:
            out.update(rope_theta=self.rope_theta, rope_scaling=None if rope['rope_type'] == 'default' else rope)
        out.update(architectures=out.get('architectures', [_ARCHITECTURES[self.model_type]]),
                   model_type=self.model_type, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                   intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                   num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                   head_dim=self.head_dim, hidden_act='silu', rms_norm_eps=self.rms_norm_eps,
                   max_position_embeddings=self.max_position_embeddings,
                   tie_word_embeddings=self.tie_word_embeddings, bos_token_id=self.bos_token_id,
                   eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id)
        if self.model_type != 'qwen2':
            out.update(attention_bias=self.attention_bias, mlp_bias=self.mlp_bias)
        out['dtype' if 'rope_parameters' in out or 'dtype' in out else 'torch_dtype'] = name
        return out

    def __repr__(self):
        return (f'LlamaConfig(model_type={self.model_type!r}, vocab_size={self.vocab_size}, hidden_size='
                f'{self.hidden_size}, intermediate_size={self.intermediate_size}, num_hidden_layers='
                f'{self.num_hidden_layers}, num_attention_heads={self.num_attention_heads}, num_key_value_heads='
                f'{self.num_key_value_heads}, head_dim={self.head_dim}, rope_type={self.rope_type!r})')


def _read_object(path: str) -> Dict:
    with open(path, encoding='utf-8') as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f'Llama.from_pretrained: {path!r} does not hold a JSON object')
    return data


def _frequencies(d: int, theta: float, rope: Dict, context: int, positions: Optional[JaxArray]) -> JaxArray:
    """The rotary inverse frequencies of head_dim d (see LlamaConfig.frequencies)."""
    exponent = np.arange(0, d, 2, dtype=np.float64) / d
    inv_freq = theta ** -exponent
    kind = rope['rope_type']
    if kind == 'linear':
        inv_freq = inv_freq / rope['factor']
    elif kind == 'llama3':
        inv_freq = _llama3(inv_freq, rope)
    elif kind == 'dynamic' and positions is not None:
        longest = jn.maximum(jn.max(positions) + 1, context).astype(jn.float32)
        factor = rope['factor']
        base = theta * ((factor * longest / context) - (factor - 1)) ** (d / (d - 2))
        return (base ** -jn.asarray(exponent, jn.float32)).astype(jn.float32)
    return jn.asarray(inv_freq, jn.float32)


def token_ids(value: Union[int, Sequence[int], None]) -> List[int]:
    """A token id setting as a list.

    Args:
        value: an int, a list of ints or None.

    Returns:
        A list of ints (empty for None).
    """
    return [] if value is None else [int(e) for e in (value if isinstance(value, (list, tuple)) else [value])]


def _rope_of(config: Dict) -> Dict:
    """{'rope_theta', 'rope_type', parameters...} from either config.json layout."""
    params = config.get('rope_parameters')
    if isinstance(params, dict) and params:
        rope = dict(params)
    else:
        rope = dict(config.get('rope_scaling') or {})
        rope.setdefault('rope_theta', config.get('rope_theta', 10000.0))
    if 'rope_type' not in rope:
        rope['rope_type'] = rope.pop('type', 'default')
    rope.setdefault('rope_theta', config.get('rope_theta', 10000.0))
    return rope


def _rope_problem(rope: Dict) -> Optional[str]:
    """What is wrong with a rope dict ('rope_type' or 'type' and its parameters), or None."""
    kind = rope.get('rope_type', rope.get('type', 'default'))
    if kind not in ROPE_TYPES:
        return f'rope type {kind!r} (supported: {", ".join(ROPE_TYPES)})'
    lacking = [k for k in _ROPE_NEEDS[kind] if rope.get(k) is None]
    if lacking:
        return f'rope type {kind!r} without {lacking}'
    partial = rope.get('partial_rotary_factor', 1.0)
    if partial not in (None, 1, 1.0):
        return f'partial_rotary_factor {partial!r} (supported: 1.0)'
    return None


def _checked_rope(rope: Dict, owner: str) -> Dict:
    """The rope dict checked (a known type with its parameters), with its type under 'rope_type'."""
    problem = _rope_problem(rope)
    if problem:
        raise ValueError(f'{owner}: {problem}')
    kind = rope.get('rope_type', rope.get('type', 'default'))
    out = {k: v for k, v in rope.items() if k not in ('type', 'partial_rotary_factor')}
    out['rope_type'] = kind
    return out


def _unsupported(config: Dict, model_type: str) -> List[str]:
    """The config.json entries, named with their values, that this implementation does not compute."""
    problems = []
    if model_type not in MODEL_TYPES:
        problems.append(f'model_type {model_type!r} (supported: {", ".join(MODEL_TYPES)})')
    act = config.get('hidden_act', 'silu')
    if act != 'silu':
        problems.append(f'hidden_act {act!r} (supported: silu)')
    if model_type == 'mistral' and config.get('sliding_window') is not None:
        problems.append(f'sliding_window {config["sliding_window"]!r} (supported: null)')
    if config.get('use_sliding_window'):
        problems.append('use_sliding_window true (supported: false)')
    kinds = sorted(set(config.get('layer_types') or ()) - {'full_attention'})
    if kinds:
        problems.append(f'layer_types {kinds} (supported: full_attention)')
    if config.get('quantization_config') is not None:
        problems.append(f'quantization_config (method {config["quantization_config"].get("quant_method")!r}; '
                        f'supported: unquantized weights)')
    if isinstance(config.get('rope_parameters'), dict) and any(isinstance(v, dict)
                                                               for v in config['rope_parameters'].values()):
        problems.append('rope_parameters per layer type (supported: one set)')
    return problems


def _llama3(inv_freq: np.ndarray, rope: Dict) -> np.ndarray:
    """Llama 3.1's frequency scaling (static: independent of the sequence length)."""
    factor, low, high = rope['factor'], rope['low_freq_factor'], rope['high_freq_factor']
    old = rope['original_max_position_embeddings']
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled)

