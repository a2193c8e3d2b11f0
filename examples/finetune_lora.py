"""Fine-tunes a Llama-family model (Llama, Qwen2, Mistral, SmolLM... saved by Hugging Face transformers) on a text
file with LoRA adapters, saves them as a PEFT adapter and prints sample continuations.

Usage: python examples/finetune_lora.py --model DIR --data text.txt [--logdir runs/finetune_lora] [--epochs 3]
           [--rank 8 --alpha 16 --targets q_proj,v_proj] [--seq 256 --batch 8 --lr 3e-4] [--dtype bfloat16]
           [--prompt "Once upon a time" ...] [--max-new-tokens 40]

DIR holds config.json, the safetensors weights and tokenizer.json, which the `tokenizers` package reads
(pip install tokenizers). The text is tokenized once and cut into windows of --seq + 1 tokens: the last tenth
for validation, the rest for training. Only the adapters are trained (Adam, cosine-decayed learning rate); the
base weights are never written. Every epoch is checkpointed in --logdir/ckpt and logged for TensorBoard in
--logdir/tb; running the command again resumes from the newest checkpoint. The adapter is written to
--logdir/adapter (adapter_config.json and adapter_model.safetensors), which
`peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR), LOGDIR/adapter)` loads, as does
`Llama.load_adapter`. The last line is the validation perplexity.
"""

import argparse
import math
import os

import jax.numpy as jn
import numpy as np
from common import TrainingRun, add_compile_cache_flag, use_compile_cache

import objax
from objax.zoo.llama import Llama


def read_tokenizer(directory: str):
    path = os.path.join(directory, 'tokenizer.json')
    try:
        import tokenizers  # optional: only the text examples need it
    except ImportError:
        raise SystemExit('the tokenizers package is needed to read tokenizer.json: pip install tokenizers') from None
    if not os.path.isfile(path):
        raise SystemExit(f'--model {directory}: no tokenizer.json')
    return tokenizers.Tokenizer.from_file(path)


def windows(ids: np.ndarray, seq: int) -> np.ndarray:
    """Non-overlapping windows of seq + 1 tokens, (n, seq + 1)."""
    n = (len(ids) - 1) // seq
    return np.stack([ids[i * seq:i * seq + seq + 1] for i in range(n)]) if n else np.zeros((0, seq + 1), np.int32)


def split_data(path: str, tokenizer, seq: int):
    """(train windows, validation windows) of the text file."""
    with open(path, encoding='utf-8') as f:
        ids = np.array(tokenizer.encode(f.read()).ids, np.int32)
    data = windows(ids, seq)
    held = max(1, len(data) // 10)
    if len(data) < 2:
        raise SystemExit(f'--data {path}: {len(ids)} tokens make fewer than 2 windows of {seq + 1}; use a longer '
                         f'text or a smaller --seq')
    return data[:-held], data[-held:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', required=True, help='Hugging Face model folder (config.json, weights, '
                                                       'tokenizer.json)')
    parser.add_argument('--data', required=True, help='a UTF-8 text file to fine-tune on')
    parser.add_argument('--logdir', default='runs/finetune_lora', help='checkpoints, TensorBoard logs, the adapter')
    parser.add_argument('--epochs', type=int, default=3, help='total number of epochs (a resumed run continues)')
    parser.add_argument('--rank', type=int, default=8, help='LoRA rank r')
    parser.add_argument('--alpha', type=float, default=16, help='LoRA alpha (the update is scaled by alpha / r)')
    parser.add_argument('--dropout', type=float, default=0.0, help='dropout on the adapters\' input')
    parser.add_argument('--targets', default='q_proj,v_proj', help='comma-separated Linear names to adapt')
    parser.add_argument('--seq', type=int, default=256, help='tokens per training sequence')
    parser.add_argument('--batch', type=int, default=8, help='sequences per step')
    parser.add_argument('--lr', type=float, default=3e-4, help='Adam learning rate, cosine-decayed to 0')
    parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                        help='dtype of the base weights (the adapters are float32)')
    parser.add_argument('--prompt', action='append', help='text to continue after training (repeatable; default: '
                                                          'the start of two validation windows)')
    parser.add_argument('--max-new-tokens', type=int, default=40)
    parser.add_argument('--seed', type=int, default=0, help='seeds the adapters and the batch order')
    add_compile_cache_flag(parser)
    args = parser.parse_args()
    use_compile_cache(args.no_compile_cache)
    if min(args.epochs, args.rank, args.seq, args.batch) < 1:
        parser.error('--epochs, --rank, --seq and --batch must be positive')

    tokenizer = read_tokenizer(args.model)
    train, valid = split_data(args.data, tokenizer, args.seq)
    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = Llama.from_pretrained(args.model, dtype=jn.bfloat16 if args.dtype == 'bfloat16' else None)
    adapters = objax.nn.add_lora(model, args.rank, args.alpha, args.targets.split(','), dropout=args.dropout)
    print(f'Loaded {args.model}: {len(model.layers)} layers, width {model.config.hidden_size}; '
          f'{sum(v.value.size for v in adapters.values()):,} adapter parameters in {len(adapters) // 2} layers; '
          f'{len(train)} training and {len(valid)} validation windows of {args.seq + 1} tokens')

    def loss(tokens, training):
        logits = model(tokens[:, :-1], training=training).astype(jn.float32)
        return objax.functional.loss.cross_entropy_logits_sparse(logits, tokens[:, 1:]).mean()

    opt = objax.optimizer.Adam(adapters)
    gv = objax.GradValues(lambda tokens: loss(tokens, True), adapters)

    def train_op(tokens, lr):
        grads, (value,) = gv(tokens)
        opt(lr, grads)
        return value

    train_op = objax.Jit(train_op, model.vars() + opt.vars())
    evaluate = objax.Jit(lambda tokens: loss(tokens, False), model.vars())

    def valid_loss() -> float:
        return float(np.mean([float(evaluate(valid[i:i + args.batch])) for i in range(0, len(valid), args.batch)]))

    batch = min(args.batch, len(train))
    steps = len(train) // batch
    with TrainingRun(args.logdir, adapters + opt.vars(), args.epochs, steps, 'lora') as run:
        if not run.done:
            print(f'Validation loss before this run: {valid_loss():.4f}')
        for epoch in run.epochs():
            summary = objax.jaxboard.Summary()
            order = np.random.default_rng([args.seed, epoch]).permutation(len(train))
            for step in range(steps):
                value = train_op(train[order[step * batch:(step + 1) * batch]], run.lr(args.lr, epoch, step))
                summary.scalar('losses/train', float(value))
                run.progress.update()
            summary.scalar('losses/valid', valid_loss())
            run.end_epoch(epoch, summary)

    out = os.path.join(args.logdir, 'adapter')
    model.save_adapter(out)
    print(f'Saved the PEFT adapter in {out}')
    prompts = [tokenizer.encode(text).ids for text in args.prompt] if args.prompt else \
        [list(row[:max(2, args.seq // 4)]) for row in valid[:2]]
    if not all(prompts):
        raise SystemExit('--prompt: a prompt gives no tokens')
    outputs = model.generate([np.array(p, np.int32) for p in prompts], args.max_new_tokens)
    for prompt, tokens in zip(prompts, outputs):
        new = np.asarray(tokens)[len(prompt):].tolist()
        print(f'Sample: {tokenizer.decode(prompt)!r} -> {tokenizer.decode(new)!r}')
    value = valid_loss()
    print(f'Validation perplexity: {math.exp(value):.3f} (loss {value:.4f})')


if __name__ == '__main__':
    main()
