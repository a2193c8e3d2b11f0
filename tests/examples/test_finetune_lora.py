"""examples/finetune_lora.py on the tiny Llama fixture with its tokenizer: trains LoRA adapters, resumes, saves a
PEFT adapter that Llama.load_adapter reads back, prints samples and the validation perplexity."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import objax
from objax.zoo.llama import Llama

EXAMPLES = Path(__file__).resolve().parents[2] / 'examples'
PRETRAINED = Path(__file__).resolve().parents[1] / 'data' / 'pretrained'
TEXT = ' '.join(['the fox and the dog read a short story together.',
                 'low rank adapters train two small matrices next to each frozen weight.',
                 'a small model reads the text and writes the next word.'] * 12)


def run(tmp_path, *args):
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1',
               OBJAX_COMPILE_CACHE=str(tmp_path / 'jax_cache'), JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLES.parent / 'src'), env.get('PYTHONPATH', '')])
    out = subprocess.run([sys.executable, str(EXAMPLES / 'finetune_lora.py'), *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, f'{args} failed:\n{out.stdout}\n{out.stderr[-3000:]}'
    return out


def perplexity(stdout: str) -> float:
    last = stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'Validation perplexity: ([0-9.]+) \(loss ([0-9.]+)\)', last)
    assert match, f'last line is not the final metric: {last!r}'
    return float(match.group(1))


def test_finetune_lora_trains_resumes_and_saves_a_peft_adapter(tmp_path):
    pytest.importorskip('tokenizers')
    model = tmp_path / 'llama'
    shutil.copytree(PRETRAINED / 'llama_tiny', model)
    shutil.copy(PRETRAINED / 'tokenizer' / 'tokenizer.json', model)
    (tmp_path / 'text.txt').write_text(TEXT)
    logdir = tmp_path / 'run'
    args = ('--model', model, '--data', tmp_path / 'text.txt', '--logdir', logdir, '--seq', 16, '--batch', 4,
            '--rank', 4, '--alpha', 8, '--lr', 1e-2, '--max-new-tokens', 5)
    first = run(tmp_path, *args, '--epochs', 2)
    before = float(re.search(r'Validation loss before this run: ([0-9.]+)', first.stdout).group(1))
    assert np.exp(before) > perplexity(first.stdout) * 1.2, first.stdout  # the adapters learned the text
    assert 'lora: 100%' in first.stderr and first.stdout.count('Sample: ') == 2
    assert sorted(os.listdir(logdir / 'ckpt')) == ['0000000001.npz', '0000000002.npz']
    config = json.loads((logdir / 'adapter' / 'adapter_config.json').read_text())
    assert (config['peft_type'], config['r'], config['lora_alpha'], config['target_modules']) == \
        ('LORA', 4, 8, ['q_proj', 'v_proj'])
    tensors = safetensors.numpy.load_file(str(logdir / 'adapter' / 'adapter_model.safetensors'))
    assert tensors['base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'].shape == (32, 4)

    second = run(tmp_path, *args, '--epochs', 3, '--prompt', 'the fox', '--prompt', 'low rank adapters train')
    assert 'Resuming from' in second.stdout and '2 of 3 epochs done' in second.stdout
    assert "Sample: 'the fox' -> " in second.stdout and perplexity(second.stdout) < np.exp(before)
    llama = Llama.from_pretrained(model)
    llama.load_adapter(logdir / 'adapter')
    trained = np.asarray(objax.nn.lora_layers(llama)['layers.0.self_attn.q_proj'].lora_b.value)
    assert np.abs(trained).max() > 0
