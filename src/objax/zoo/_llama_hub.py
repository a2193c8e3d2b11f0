"""Handing a Llama-family model to and from the PyTorch world: Hugging Face tensor names, save_pretrained (one
safetensors file, or shards with an index), and LoRA adapters in PEFT's format."""

import json
import os
import re
from typing import Dict, List, Tuple, Union

import numpy as np
import safetensors.numpy

from objax.io._atomic import atomic_write
from objax.io.pretrained import load_tensors, read_tensors
from objax.module import ModuleList
from objax.nn import Stack
from objax.nn.lora import add_lora, lora_layers, merge_lora
from objax.varcollection import VarCollection
from objax.zoo._llama_layers import block_tensors, linear_tensors

__all__ = ['LlamaHub', 'model_tensors', 'parse_size']

_SINGLE, _INDEX = 'model.safetensors', 'model.safetensors.index.json'
_ADAPTER_CONFIG, _ADAPTER_WEIGHTS = 'adapter_config.json', 'adapter_model.safetensors'
_PEFT_PREFIX = 'base_model.model.'
# The Linear layers of a block, as PEFT's target_modules name them ('all-linear' means these).
_BLOCK_LINEARS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')
# adapter_config.json entries and the only value (or values) supported.
_PEFT_FIXED = (('peft_type', ('LORA',)), ('use_dora', (False, None)), ('bias', ('none',)),
               ('fan_in_fan_out', (False, None)), ('modules_to_save', (None, [])), ('rank_pattern', ({}, None)),
               ('alpha_pattern', ({}, None)), ('layers_to_transform', (None,)), ('layers_pattern', (None, [])),
               ('exclude_modules', (None, [])), ('lora_bias', (False, None)), ('use_qalora', (False, None)),
               ('target_parameters', (None, [])), ('layer_replication', (None, [])))
_UNITS = {'': 1, 'B': 1, 'KB': 10 ** 3, 'MB': 10 ** 6, 'GB': 10 ** 9, 'TB': 10 ** 12, 'KIB': 2 ** 10,
          'MIB': 2 ** 20, 'GIB': 2 ** 30, 'TIB': 2 ** 40}


def model_tensors(model) -> Dict[str, object]:
    """The targets of objax.io.load_tensors for a Llama's weights, by Hugging Face tensor name.

    Args:
        model: a Llama without adapters.

    Returns:
        A dict tensor name -> variable, or (variable, transform) for the Linear weights (PyTorch's (out, in)).
        For blocks held in a Stack, the variables are copies (Stack.unstack): read them, do not load them.
    """
    out = {'model.embed_tokens.weight': model.embed_tokens.w}
    blocks = model.layers.unstack() if isinstance(model.layers, Stack) else model.layers
    for i, block in enumerate(blocks):
        out.update(block_tensors(f'model.layers.{i}', block))
    out['model.norm.weight'] = model.norm.gamma
    if model.lm_head is not None:
        out.update(linear_tensors('lm_head', model.lm_head))
    return out


def hf_path(path: str) -> str:
    """The Hugging Face module path of an attribute path of Llama ('layers.0.self_attn.q_proj' ->
    'model.layers.0.self_attn.q_proj'; the head stays 'lm_head')."""
    return path if path == 'lm_head' else f'model.{path}'


def parse_size(size: Union[int, str]) -> int:
    """Bytes from an int or a string such as '5GB', '150KB' or '2GiB' (transformers' max_shard_size).

    Args:
        size: an int (bytes) or a number followed by B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB.

    Returns:
        The number of bytes, >= 1.

    Raises:
        ValueError: a malformed or non-positive size.
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        value = int(size)
    else:
        match = re.fullmatch(r'\s*([0-9.]+)\s*([a-zA-Z]*)\s*', str(size))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"max_shard_size: expected bytes or a size such as '5GB', got {size!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise ValueError(f'max_shard_size must be positive, got {size!r}')
    return value


def _shards(names: List[str], sizes: Dict[str, int], limit: int) -> List[List[str]]:
    """Consecutive groups of names, each at most `limit` bytes (a larger tensor alone), as transformers splits."""
    groups, current, total = [], [], 0
    for name in names:
        if current and total + sizes[name] > limit:
            groups.append(current)
            current, total = [], 0
        current.append(name)
        total += sizes[name]
    return groups + [current] if current else groups


def _write_json(path: str, data: Dict):
    text = json.dumps(data, indent=2, sort_keys=True) + '\n'
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def _write_tensors(path: str, tensors: Dict[str, np.ndarray]):
    data = safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                  metadata={'format': 'pt'})
    atomic_write(path, lambda f: f.write(data))


def _read_adapter_config(directory: str) -> Dict:
    path = os.path.join(directory, _ADAPTER_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Llama.load_adapter: {path!r} does not exist (expected a PEFT adapter folder '
                                f'holding {_ADAPTER_CONFIG} and {_ADAPTER_WEIGHTS})')
    with open(path, encoding='utf-8') as f:
        config = json.load(f)
    problems = [f'{name} {config[name]!r} (supported: {allowed[0]!r})' for name, allowed in _PEFT_FIXED
                if name in config and config[name] not in allowed]
    missing = [k for k in ('r', 'lora_alpha', 'target_modules') if config.get(k) is None]
    if missing:
        problems.append(f'no {missing}')
    targets = config.get('target_modules')
    if isinstance(targets, str) and targets != 'all-linear':
        problems.append(f'target_modules {targets!r} as a pattern (supported: a list of names, or all-linear)')
    if problems:
        raise ValueError(f'Llama.load_adapter: {path!r} asks for what objax LoRA does not compute: '
                         + '; '.join(problems))
    return config


class LlamaHub:
    """save_pretrained, load_adapter and save_adapter of Llama (a part of objax.zoo.llama.Llama)."""

    def save_pretrained(self, directory: str, max_shard_size: Union[int, str] = '5GB'):
        """Writes the model as transformers' `save_pretrained` does, so that transformers' `from_pretrained` (and
        this class's) loads it: config.json and model.safetensors, or, when the weights exceed `max_shard_size`,
        model-00001-of-0000n.safetensors... with model.safetensors.index.json. Tensors are in the model's dtype,
        PyTorch's layout; each shard is gathered and written in turn. Weight files of an earlier save in the
        folder that this one does not write are removed.

        Args:
            directory: the folder (created if needed).
            max_shard_size: the most bytes per file: an int, or a string such as '5GB' or '500MB'.

        Raises:
            ValueError: the model holds LoRA adapters (merge them with objax.nn.merge_lora first, or save them
                with save_adapter), or a malformed max_shard_size.
        """
        if lora_layers(self):
            raise ValueError('Llama.save_pretrained: the model holds LoRA adapters; fold them into the weights with '
                             'objax.nn.merge_lora(model) first, or save them alone with save_adapter')
        limit = parse_size(max_shard_size)
        targets = {name: t if isinstance(t, tuple) else (t, None) for name, t in model_tensors(self).items()}
        counts = {name: int(np.prod(np.shape(var.value))) for name, (var, _) in targets.items()}
        sizes = {name: counts[name] * targets[name][0].value.dtype.itemsize for name in targets}
        groups = _shards(list(targets), sizes, limit)
        files = [_SINGLE] if len(groups) == 1 else [f'model-{i + 1:05d}-of-{len(groups):05d}.safetensors'
                                                     for i in range(len(groups))]
        os.makedirs(directory, exist_ok=True)
        _write_json(os.path.join(directory, 'config.json'), self.config.to_dict(self.dtype))
        for group, file in zip(groups, files):
            tensors = {}
            for name in group:
                var, transform = targets[name]
                value = np.asarray(var.value)
                tensors[name] = transform(value) if transform is not None else value
            _write_tensors(os.path.join(directory, file), tensors)
        if len(groups) > 1:
            weight_map = {name: file for group, file in zip(groups, files) for name in group}
            _write_json(os.path.join(directory, _INDEX), {
                'metadata': {'total_size': sum(sizes.values()), 'total_parameters': sum(counts.values())},
                'weight_map': weight_map})
        for name in os.listdir(directory):
            stale = name == _INDEX and len(groups) == 1 or re.fullmatch(r'model(-\d+-of-\d+)?\.safetensors', name)
            if stale and name not in files:
                os.remove(os.path.join(directory, name))

    def load_adapter(self, directory: str) -> VarCollection:
        """Reads a LoRA adapter saved by PEFT (`PeftModel.save_pretrained`: adapter_config.json with `r`,
        `lora_alpha`, `target_modules`, `use_rslora`, `lora_dropout`; adapter_model.safetensors) and adds it to
        the model (objax.nn.add_lora), so that the model computes what the PeftModel computes.

        Args:
            directory: the adapter folder.

        Returns:
            The VarCollection of the adapter's TrainVars (train it further, or fold it in with merge_lora).

        Raises:
            FileNotFoundError: no adapter_config.json or adapter_model.safetensors.
            ValueError: the model already holds adapters; an adapter configuration objax does not compute (named:
                DoRA, biases, per-layer ranks, other targets...); missing, unexpected or wrong-shaped tensors. The
                model is left without the adapter then.
        """
        directory = os.fspath(directory)
        if lora_layers(self):
            raise ValueError('Llama.load_adapter: the model already holds LoRA adapters (merge them with '
                             'objax.nn.merge_lora, or load the adapter into a fresh model)')
        config = _read_adapter_config(directory)
        tensors = read_tensors(os.path.join(directory, _ADAPTER_WEIGHTS))
        targets = config['target_modules']
        targets = _BLOCK_LINEARS if targets == 'all-linear' else targets
        stack = self.layers if isinstance(self.layers, Stack) else None
        if stack is not None:  # load layer by layer, then stack again
            self.layers = ModuleList(stack.unstack())
        try:
            adapters = add_lora(self, int(config['r']), config['lora_alpha'], targets,
                                dropout=config.get('lora_dropout') or 0.0, use_rslora=bool(config.get('use_rslora')))
            try:
                load_tensors(_adapter_targets(self), tensors, vc=self.vars())
            except Exception:
                merge_lora(self)  # B is still zero: this only takes the new adapters out again
                raise
        finally:
            if stack is not None:
                self.layers = Stack.from_layers(list(self.layers), remat=stack.remat, policy=stack.policy,
                                                unroll=stack.unroll)
        if stack is not None:
            adapters = VarCollection((k, v) for k, v in self.vars().items() if '(LoRALinear).lora_' in k)
        return adapters

    def save_adapter(self, directory: str):
        """Writes the model's LoRA adapters as PEFT does (adapter_config.json and adapter_model.safetensors with
        PEFT's key names and (rank, in) / (out, rank) shapes), for `peft.PeftModel.from_pretrained(hf_model,
        directory)` and servers that read PEFT adapters (vLLM, SGLang).

        Args:
            directory: the folder (created if needed).

        Raises:
            ValueError: the model holds no adapters, or adapters of different ranks, alphas or rsLoRA settings
                (PEFT's config holds one of each).
        """
        layers = lora_layers(self)
        if not layers:
            raise ValueError('Llama.save_adapter: the model holds no LoRA adapters (add them with objax.nn.add_lora '
                             'or load_adapter)')
        settings = {(a.rank, a.alpha, a.use_rslora, a.dropout) for a in layers.values()}
        if len(settings) > 1:
            raise ValueError(f'Llama.save_adapter: the adapters differ in (rank, alpha, use_rslora, dropout): '
                             f'{sorted(settings)}; PEFT\'s adapter_config.json holds one setting')
        rank, alpha, rslora, dropout = settings.pop()
        os.makedirs(directory, exist_ok=True)
        _write_json(os.path.join(directory, _ADAPTER_CONFIG), {
            'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'base_model_name_or_path': self.source_directory,
            'revision': None, 'inference_mode': True, 'r': rank, 'lora_alpha': alpha, 'lora_dropout': dropout,
            'target_modules': sorted({path.rsplit('.', 1)[-1] for path in layers}), 'bias': 'none',
            'fan_in_fan_out': False, 'modules_to_save': None, 'init_lora_weights': True,
            'layers_to_transform': None, 'layers_pattern': None, 'rank_pattern': {}, 'alpha_pattern': {},
            'use_rslora': rslora, 'use_dora': False})
        tensors = {}
        for path, adapter in layers.items():
            name = f'{_PEFT_PREFIX}{hf_path(path)}'
            tensors[f'{name}.lora_A.weight'] = np.asarray(adapter.lora_a.value).T
            tensors[f'{name}.lora_B.weight'] = np.asarray(adapter.lora_b.value).T
        _write_tensors(os.path.join(directory, _ADAPTER_WEIGHTS), tensors)


def _adapter_targets(model) -> Dict[str, Tuple]:
    """PEFT's tensor names -> (variable, transpose) of the model's adapters."""
    out = {}
    for path, adapter in lora_layers(model).items():
        name = f'{_PEFT_PREFIX}{hf_path(path)}'
        out[f'{name}.lora_A.weight'] = (adapter.lora_a, np.transpose)
        out[f'{name}.lora_B.weight'] = (adapter.lora_b, np.transpose)
    return out
