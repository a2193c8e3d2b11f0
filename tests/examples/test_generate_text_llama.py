"""examples/generate_text.py with a Llama-family folder: prompts of different lengths give transformers' greedy
tokens (tests/data/pretrained), and text prompts go through the folder's tokenizer.json."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'generate_text.py'
PRETRAINED = Path(__file__).resolve().parents[1] / 'data' / 'pretrained'


def run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
    env['PYTHONPATH'] = os.pathsep.join([str(EXAMPLE.parents[1] / 'src'), env.get('PYTHONPATH', '')])
    out = subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, f'{args} failed:\n{out.stdout}\n{out.stderr[-3000:]}'
    return out


@pytest.mark.parametrize('name', ['llama_tiny', 'qwen2_tiny'])
def test_prompts_of_different_lengths_give_the_greedy_tokens_of_transformers(name):
    reference = np.load(PRETRAINED / f'{name}_reference.npz')
    prompts = [arg for key in ('prompt_a', 'prompt_b') for arg in ('--prompt-ids', ','.join(map(str, reference[key])))]
    out = run('--model', PRETRAINED / name, *prompts, '--max-new-tokens', 10)
    printed = [line[len('ids: '):] for line in out.stdout.splitlines() if line.startswith('ids: ')]
    assert printed == [','.join(map(str, reference[key])) for key in ('greedy_a', 'greedy_b')], out.stdout
    assert 'Loaded' in out.stdout and '20 tokens in' in out.stdout


def test_text_prompt_through_the_tokenizer_in_bfloat16(tmp_path):
    pytest.importorskip('tokenizers')
    folder = tmp_path / 'llama'
    shutil.copytree(PRETRAINED / 'llama_tiny', folder)
    shutil.copy(PRETRAINED / 'tokenizer' / 'tokenizer.json', folder)
    out = run('--model', folder, '--prompt', 'the quick brown fox', '--max-new-tokens', 6, '--dtype', 'bfloat16',
              '--temperature', 0.8, '--top-k', 20, '--top-p', 0.9, '--seed', 3)
    lines = out.stdout.splitlines()
    assert lines[1].startswith('the quick brown fox') and '6 tokens in' in lines[2], out.stdout
