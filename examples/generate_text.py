"""Continues a prompt with a GPT-2 saved by Hugging Face transformers (a folder holding config.json and
model.safetensors, e.g. a download of https://huggingface.co/openai-community/gpt2).

Usage: python examples/generate_text.py --model DIR --prompt "Once upon a time" [--max-new-tokens 40]
                                        [--temperature 0.8 --seed 0]
       python examples/generate_text.py --model DIR --prompt-ids 464,3290,318 [--prompt-ids 40,588,262 ...]

--prompt is turned into token ids with DIR/tokenizer.json, read by the `tokenizers` package
(pip install tokenizers); the prompt and its continuation are printed as text. Without them, give the token ids
themselves with --prompt-ids (once per prompt of a batch; all of the same length): each row is printed as
comma-separated ids, prompt included. --temperature 0 (the default) picks the most likely token at each step;
a higher temperature samples, reproducibly for a given --seed.
"""

import argparse
import os
import time
from typing import List, Optional

import numpy as np

import objax
from objax.zoo.gpt2 import GPT2


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


def _ids(text: str) -> List[int]:
    try:
        return [int(t) for t in text.split(',') if t.strip()]
    except ValueError:
        raise SystemExit(f'--prompt-ids {text!r}: expected comma-separated integers, e.g. 464,3290,318') from None


def prompt_tokens(args, tokenizer) -> np.ndarray:
    """The prompts as token ids, (batch, P) int32."""
    if args.prompt_ids:
        rows = [_ids(text) for text in args.prompt_ids]
        if len({len(r) for r in rows}) != 1 or not rows[0]:
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
    parser.add_argument('--model', required=True, help='Hugging Face GPT-2 folder (config.json, model.safetensors)')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--prompt', help='text to continue (needs tokenizer.json and the tokenizers package)')
    group.add_argument('--prompt-ids', action='append', help='token ids to continue, e.g. 464,3290,318 '
                                                             '(repeat for a batch)')
    parser.add_argument('--max-new-tokens', type=int, default=40, help='number of tokens to generate')
    parser.add_argument('--temperature', type=float, default=0.0, help='0: greedy; > 0: sampling temperature')
    parser.add_argument('--seed', type=int, default=0, help='seed of the sampling')
    args = parser.parse_args(argv)

    if not os.path.isdir(args.model):
        raise SystemExit(f'--model {args.model}: no such folder')
    start = time.time()
    model = GPT2.from_pretrained(args.model)
    tokenizer = _tokenizer(args.model)
    prompt = prompt_tokens(args, tokenizer)
    print(f'Loaded {args.model}: {len(model.blocks)} layers, width {model.n_embd}, '
          f'{sum(v.value.size for v in model.vars().subset(objax.TrainVar).values()):,} parameters '
          f'({time.time() - start:.1f}s)')
    start = time.time()
    tokens = np.asarray(model.generate(prompt, args.max_new_tokens, temperature=args.temperature,
                                       generator=objax.random.Generator(args.seed)))
    seconds = time.time() - start
    for row in tokens:
        if args.prompt_ids:
            print('ids: ' + ','.join(str(int(t)) for t in row))
        else:
            print(tokenizer.decode(row.tolist()))
    print(f'{tokens.shape[0] * args.max_new_tokens} tokens in {seconds:.1f}s (compilation included)')


if __name__ == '__main__':
    main()
