"""Continues a prompt with a GPT-2 or a Llama-family model (Llama, Qwen2, Mistral...) saved by Hugging Face
transformers (a folder holding config.json and model.safetensors, e.g. a download of
https://huggingface.co/openai-community/gpt2 or of meta-llama/Llama-3.2-1B).

Usage: python examples/generate_text.py --model DIR --prompt "Once upon a time" [--max-new-tokens 40]
                                        [--temperature 0.8 --seed 0]
       python examples/generate_text.py --model DIR --prompt-ids 464,3290,318 [--prompt-ids 40,588,262 ...]

--prompt is turned into token ids with DIR/tokenizer.json, read by the `tokenizers` package
(pip install tokenizers); the prompt and its continuation are printed as text. Without them, give the token ids
themselves with --prompt-ids (once per prompt of a batch; all of the same length): each row is printed as
comma-separated ids, prompt included. --temperature 0 (the default) picks the most likely token at each step;
a higher temperature samples, reproducibly for a given --seed. A Llama-family model (config.json's model_type
llama, qwen2 or mistral) takes prompts of different lengths, stops each at its end-of-sequence token, and can
sample with --top-k / --top-p and hold its weights in --dtype bfloat16.
"""

import argparse
import json
import os
import time
from typing import List, Optional

import jax.numpy as jn
import numpy as np

import objax
from objax.zoo.gpt2 import GPT2
from objax.zoo.llama import Llama


def _tokenizer(directory: str):
    """The Hugging Face tokenizer of the model folder, or None (no tokenizer.json, or no `tokenizers`)."""
    path = os.path.join(directory, 'tokenizer.json')
    if not os.path.isfile(path):
        return None
    try:
        import tokenizers  # optional: only needed to turn text into token ids
    except ImportError:
        return None
    return tokenizers.Tokenizer.from_file(path)


def _model_type(directory: str) -> Optional[str]:
    """config.json's model_type (None without one: GPT2.from_pretrained then says what is missing)."""
    path = os.path.join(directory, 'config.json')
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f).get('model_type')


def _ids(text: str) -> List[int]:
    try:
        return [int(t) for t in text.split(',') if t.strip()]
    except ValueError:
        raise SystemExit(f'--prompt-ids {text!r}: expected comma-separated integers, e.g. 464,3290,318') from None


def prompt_tokens(args, tokenizer, same_length: bool = True):
    """The prompts as token ids: (batch, P) int32, or a list of 1-D arrays when they may differ in length."""
    if args.prompt_ids:
        rows = [_ids(text) for text in args.prompt_ids]
        if not all(rows):
            raise SystemExit('--prompt-ids: every prompt needs at least one id')
        if not same_length:
            return [np.array(r, np.int32) for r in rows]
        if len({len(r) for r in rows}) != 1:
            raise SystemExit(f'--prompt-ids: every prompt needs the same, non-zero number of ids; got '
                             f'{[len(r) for r in rows]}')
        return np.array(rows, np.int32)
    if tokenizer is None:
        raise SystemExit(f'--prompt needs {os.path.join(args.model, "tokenizer.json")} and the tokenizers package '
                         f'(pip install tokenizers); otherwise give token ids with --prompt-ids')
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise SystemExit('--prompt: the text gives no tokens')
    return np.array([ids], np.int32)


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='Hugging Face GPT-2 or Llama-family folder (config.json, '
                                                       'model.safetensors)')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--prompt', help='text to continue (needs tokenizer.json and the tokenizers package)')
    group.add_argument('--prompt-ids', action='append', help='token ids to continue, e.g. 464,3290,318 '
                                                             '(repeat for a batch)')
    parser.add_argument('--max-new-tokens', type=int, default=40, help='number of tokens to generate')
    parser.add_argument('--temperature', type=float, default=0.0, help='0: greedy; > 0: sampling temperature')
    parser.add_argument('--seed', type=int, default=0, help='seed of the sampling')
    parser.add_argument('--top-k', type=int, help='Llama family: sample among the k most likely tokens')
    parser.add_argument('--top-p', type=float, help='Llama family: sample within the top-p probability mass')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                        help='Llama family: dtype of the weights')
    args = parser.parse_args(argv)

    if not os.path.isdir(args.model):
        raise SystemExit(f'--model {args.model}: no such folder')
    llama = _model_type(args.model) in ('llama', 'qwen2', 'mistral')
    start = time.time()
    if llama:
        model = Llama.from_pretrained(args.model, dtype=jn.bfloat16 if args.dtype == 'bfloat16' else None)
        sampling = dict(top_k=args.top_k, top_p=args.top_p)
        width, depth = model.config.hidden_size, len(model.layers)
    else:
        model, sampling = GPT2.from_pretrained(args.model), {}
        width, depth = model.n_embd, len(model.blocks)
    tokenizer = _tokenizer(args.model)
    prompt = prompt_tokens(args, tokenizer, same_length=not llama)
    print(f'Loaded {args.model}: {depth} layers, width {width}, '
          f'{sum(v.value.size for v in model.vars().subset(objax.TrainVar).values()):,} parameters '
          f'({time.time() - start:.1f}s)')
    start = time.time()
    rows = model.generate(prompt, args.max_new_tokens, temperature=args.temperature,
                          generator=objax.random.Generator(args.seed), **sampling)
    rows = [np.asarray(row) for row in rows]
    seconds = time.time() - start
    for row in rows:
        if args.prompt_ids:
            print('ids: ' + ','.join(str(int(t)) for t in row))
        else:
            print(tokenizer.decode(row.tolist()))
    new = sum(len(row) for row in rows) - sum(len(p) for p in prompt)
    print(f'{new} tokens in {seconds:.1f}s (compilation included)')


if __name__ == '__main__':
    main()
