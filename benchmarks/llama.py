"""objax.zoo.llama.Llama: decode speed with the key/value cache, and a LoRA training step against full fine-tuning.

1. Decoding (greedy, random weights, no end-of-sequence token): Llama.generate (the prompt fills the cache in one
   call, then one compiled step per token reads it) against recomputing the whole prefix for every new token
   (one compiled forward pass over the full, padded sequence, taking the logits at the last real position).
   Tokens per second = batch * new tokens / seconds, compilation excluded (each is run once before timing).
2. Training: one Adam step on next-token cross-entropy of a Llama of width --width with --layers blocks
   (grouped-query attention, heads of 64, MLP 3x width), either fine-tuning every weight or LoRA (rank --rank on
   q_proj and v_proj, the base frozen), without remat, with remat of each block of the unrolled ModuleList
   (jax.checkpoint), and with the blocks in an objax.nn.Stack with remat (one scanned, rematerialized body). The
   median step time over --repeats timings of --steps steps, and the peak memory of the compiled step from XLA's
   memory analysis: argument + output + temp - alias bytes (every input, output and scratch buffer live at once
   at worst; an output written into a donated input shares its buffer), as benchmarks/memory.py computes it.
3. --decode-1b (for a GPU): greedy decode tokens/s of a random model shaped like Llama-3.2-1B (16 layers, width
   2048, 32 query and 8 key/value heads, MLP 8192, vocabulary 128256, tied head) in bfloat16.

Usage: python benchmarks/llama.py [--width 512] [--layers 8] [--batch 4] [--seq 128] [--steps 5] [--repeats 3]
                                  [--decode-batch 1] [--prompt 16] [--new 48] [--decode-1b]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jn
import numpy as np

import objax
from objax.zoo.llama import Llama, LlamaConfig

MB = 2 ** 20
# (LoRA, remat, stack) of each training variant.
VARIANTS = ((False, False, False), (False, True, True), (True, False, False), (True, True, False), (True, True, True))


def config(width: int, layers: int, vocab: int) -> LlamaConfig:
    heads = max(1, width // 64)
    return LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), rms_norm_eps=1e-5,
                       rope_theta=5e5)


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() (run once first, to compile)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decoding(model: Llama, batch: int, prompt_len: int, new: int, repeats: int, label: str,
             with_recompute: bool = True):
    vocab = model.config.vocab_size
    prompt = jn.asarray(np.random.default_rng(2).integers(0, vocab, size=(batch, prompt_len)), jn.int32)
    model.eos_token_id = None
    forward = objax.Jit(lambda t: model(t), model.vars())
    total = prompt_len + new

    def recompute():
        buf = jn.zeros((batch, total), jn.int32).at[:, :prompt_len].set(prompt)
        for pos in range(prompt_len, total):
            buf = buf.at[:, pos].set(forward(buf)[:, pos - 1].argmax(-1).astype(jn.int32))
        return buf

    rates = {'cache': batch * new / timed(lambda: model.generate(prompt, new), repeats)}
    same = ''
    if with_recompute:
        rates['recompute'] = batch * new / timed(recompute, repeats)
        same = np.array_equal(np.asarray(model.generate(prompt, new)), np.asarray(recompute()))
        same = f' (cache and recompute give the same tokens: {same})'
    print(f'greedy decoding ({label}): batch {batch}, prompt {prompt_len}, {new} new tokens{same}')
    for name, rate in rates.items():
        print(f'{name:>10} {rate:10.1f} tokens/s')
    if 'recompute' in rates:
        print(f'cache speed-up: {rates["cache"] / rates["recompute"]:.1f}x')


def train_step(args, lora: bool, remat: bool, stack: bool):
    """(the compiled step, its memory analysis, the number of trained parameters)."""
    objax.random.DEFAULT_GENERATOR.seed(0)
    model = Llama(config(args.width, args.layers, args.vocab), remat=remat, stack=stack)
    trained = objax.nn.add_lora(model, args.rank, 2 * args.rank, ('q_proj', 'v_proj')) if lora else \
        model.vars().subset(objax.TrainVar)
    opt = objax.optimizer.Adam(trained)
    gv = objax.GradValues(lambda t: objax.functional.loss.cross_entropy_logits_sparse(
        model(t[:, :-1], training=True), t[:, 1:]).mean(), trained)

    def train_op(tokens):
        grads, (loss,) = gv(tokens)
        opt(1e-4, grads)
        return loss

    step = objax.Jit(train_op, model.vars() + opt.vars())
    tokens = jn.asarray(np.random.default_rng(1).integers(0, args.vocab, (args.batch, args.seq + 1)), jn.int32)
    jitted = step._call_donating if step._call_donating is not None else step._call  # what objax.Jit runs
    analysis = jitted.lower(step._pure.values(), tokens).compile().memory_analysis()
    count = sum(v.value.size for v in trained.values())
    return (lambda: [step(tokens) for _ in range(args.steps)][-1]), analysis, count


def training(args):
    print(f'training step: width {args.width}, {args.layers} layers, batch {args.batch} x {args.seq} tokens, '
          f'vocabulary {args.vocab}, Adam; LoRA rank {args.rank} on q_proj, v_proj')
    print(f'{"variant":>22} {"trained params":>15} {"ms/step":>9} {"XLA peak MB":>12} {"temp MB":>9} '
          f'{"arguments MB":>13}')
    for lora, remat, stack in VARIANTS:
        run, m, count = train_step(args, lora, remat, stack)
        ms = f'{timed(run, args.repeats) / args.steps * 1e3:9.1f}' if args.steps else f'{"-":>9}'
        peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        name = ('LoRA' if lora else 'full') + (' + stack' if stack else '') + (' + remat' if remat else '')
        print(f'{name:>22} {count:15,} {ms} {peak / MB:12.1f} {m.temp_size_in_bytes / MB:9.1f} '
              f'{m.argument_size_in_bytes / MB:13.1f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--width', type=int, default=512)
    parser.add_argument('--layers', type=int, default=8)
    parser.add_argument('--vocab', type=int, default=4096)
    parser.add_argument('--batch', type=int, default=4, help='training sequences per step')
    parser.add_argument('--seq', type=int, default=128, help='training tokens per sequence')
    parser.add_argument('--rank', type=int, default=8, help='LoRA rank (alpha = 2 * rank)')
    parser.add_argument('--steps', type=int, default=5, help='training steps per timing (0: memory only)')
    parser.add_argument('--repeats', type=int, default=3, help='timings per variant (median kept)')
    parser.add_argument('--decode-batch', type=int, default=1)
    parser.add_argument('--prompt', type=int, default=16, help='decoding prompt length')
    parser.add_argument('--new', type=int, default=48, help='tokens to decode')
    parser.add_argument('--decode-1b', action='store_true', help='also time a Llama-3.2-1B-shaped model (a GPU)')
    parser.add_argument('--skip-training', action='store_true')
    parser.add_argument('--skip-decoding', action='store_true')
    args = parser.parse_args()
    print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind})')
    objax.random.DEFAULT_GENERATOR.seed(0)
    if not args.skip_decoding:
        decoding(Llama(config(args.width, args.layers, args.vocab)), args.decode_batch, args.prompt, args.new,
                 args.repeats, f'width {args.width}, {args.layers} layers')
    if not args.skip_training:
        training(args)
    if args.decode_1b:
        shape = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                            num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                            rope_theta=5e5, rope_scaling={'rope_type': 'llama3', 'factor': 32.0,
                                                          'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                                                          'original_max_position_embeddings': 8192})
        model = Llama(shape, dtype=jn.bfloat16)
        for batch in (1, 8):
            decoding(model, batch, 128, 256, args.repeats, 'Llama-3.2-1B shape, bfloat16', with_recompute=False)


if __name__ == '__main__':
    main()
