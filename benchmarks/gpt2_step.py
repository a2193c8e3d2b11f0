"""A GPT-2-shaped training step in objax, Flax NNX, Equinox and pure JAX; and decode speed with the key/value cache.

Every model has the same shape: width 256, 4 pre-norm blocks of 4 heads, MLP ratio 4, sequence 128, a tied token
embedding as output head, no dropout; the step is next-token cross-entropy with Adam. Each library is written the
way its users write it: objax with objax.zoo.gpt2.GPT2, GradValues, objax.optimizer.Adam and Jit; Flax NNX with
nnx layers (nnx.MultiHeadAttention), nnx.Optimizer and nnx.jit; Equinox with eqx.nn layers (vmapped over the batch),
optax and eqx.filter_jit; pure JAX with a parameter dict, jax.nn.dot_product_attention, optax and jax.jit. All run
in one process, interleaved, and the median step time of each is printed with its ratio to objax's.

The decode part times GPT2.generate (a prefill, then one compiled step per token that reads the cache) against
recomputing the whole prefix for every new token (one compiled forward pass over the full, padded sequence).

Needs flax and equinox (`pip install -e '.[bench]'`).
Usage: python benchmarks/gpt2_step.py [--steps 10] [--repeats 5] [--batch 8] [--vocab 4096]
"""

import argparse
import statistics
import time

import equinox as eqx
import flax
import jax
import jax.numpy as jn
import numpy as np
import optax
from flax import nnx

import objax
from objax.zoo.gpt2 import GPT2

WIDTH, DEPTH, HEADS, SEQ, LR = 256, 4, 4, 128, 1e-4


def next_token_loss(logits, tokens):
    """Mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1]."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jn.float32))
    return -jn.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()


def objax_step(vocab: int):
    model = GPT2(vocab_size=vocab, n_positions=SEQ, n_embd=WIDTH, n_layer=DEPTH, n_head=HEADS)
    opt = objax.optimizer.Adam(model.vars())
    gv = objax.GradValues(lambda t: next_token_loss(model(t, training=True), t), model.vars())

    def train_op(tokens):
        grads, (loss,) = gv(tokens)
        opt(LR, grads)
        return loss

    return objax.Jit(train_op, gv.vars() + opt.vars())


def _jax_forward(p, tokens):
    """GPT-2 forward pass over a parameter dict (layer norms eps 1e-5, tanh gelu, causal attention)."""
    def norm(x, g, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b

    b, t = tokens.shape
    x = p['wte'][tokens] + p['wpe'][:t]
    for blk in p['blocks']:
        h = norm(x, *blk['ln1'])
        q, k, v = jn.split(h @ blk['qkv_w'] + blk['qkv_b'], 3, axis=-1)
        q, k, v = (a.reshape(b, t, HEADS, WIDTH // HEADS) for a in (q, k, v))
        a = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(b, t, WIDTH)
        x = x + a @ blk['proj_w'] + blk['proj_b']
        h = norm(x, *blk['ln2'])
        x = x + jax.nn.gelu(h @ blk['fc_w'] + blk['fc_b'], approximate=True) @ blk['out_w'] + blk['out_b']
    return norm(x, *p['lnf']) @ p['wte'].T


def jax_step(vocab: int):
    rng = np.random.default_rng(0)

    def w(*shape, std=0.02):
        return jn.asarray(rng.normal(scale=std, size=shape).astype(np.float32))

    def ln():
        return jn.ones(WIDTH), jn.zeros(WIDTH)

    params = {'wte': w(vocab, WIDTH), 'wpe': w(SEQ, WIDTH), 'lnf': ln(), 'blocks': [
        {'ln1': ln(), 'qkv_w': w(WIDTH, 3 * WIDTH), 'qkv_b': jn.zeros(3 * WIDTH), 'proj_w': w(WIDTH, WIDTH),
         'proj_b': jn.zeros(WIDTH), 'ln2': ln(), 'fc_w': w(WIDTH, 4 * WIDTH), 'fc_b': jn.zeros(4 * WIDTH),
         'out_w': w(4 * WIDTH, WIDTH), 'out_b': jn.zeros(WIDTH)} for _ in range(DEPTH)]}
    tx = optax.adam(LR)
    state = {'params': params, 'opt': tx.init(params)}

    @jax.jit
    def train_op(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(lambda q: next_token_loss(_jax_forward(q, tokens), tokens))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def call(tokens):
        state['params'], state['opt'], loss = train_op(state['params'], state['opt'], tokens)
        return loss

    return call


class _NnxBlock(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(HEADS, WIDTH, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)
        self.fc = nnx.Linear(WIDTH, 4 * WIDTH, rngs=rngs)
        self.out = nnx.Linear(4 * WIDTH, WIDTH, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.out(nnx.gelu(self.fc(self.ln2(x)), approximate=True))


class _NnxGPT(nnx.Module):
    def __init__(self, vocab: int, rngs: nnx.Rngs):
        self.wte = nnx.Embed(vocab, WIDTH, rngs=rngs)
        self.wpe = nnx.Embed(SEQ, WIDTH, rngs=rngs)
        self.blocks = nnx.List([_NnxBlock(rngs) for _ in range(DEPTH)])
        self.lnf = nnx.LayerNorm(WIDTH, epsilon=1e-5, rngs=rngs)

    def __call__(self, tokens):
        x = self.wte(tokens) + self.wpe(jn.arange(tokens.shape[1]))
        mask = nnx.make_causal_mask(tokens)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.wte.attend(self.lnf(x))


def nnx_step(vocab: int):
    model = _NnxGPT(vocab, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def train_op(model, optimizer, tokens):
        loss, grads = nnx.value_and_grad(lambda m: next_token_loss(m(tokens), tokens))(model)
        optimizer.update(model, grads)
        return loss

    return lambda tokens: train_op(model, optimizer, tokens)


class _EqxBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    fc: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1 = eqx.nn.LayerNorm(WIDTH, eps=1e-5)
        self.attn = eqx.nn.MultiheadAttention(HEADS, WIDTH, use_query_bias=True, use_key_bias=True,
                                              use_value_bias=True, use_output_bias=True, key=k1)
        self.ln2 = eqx.nn.LayerNorm(WIDTH, eps=1e-5)
        self.fc = eqx.nn.Linear(WIDTH, 4 * WIDTH, key=k2)
        self.out = eqx.nn.Linear(4 * WIDTH, WIDTH, key=k3)

    def __call__(self, x, mask):  # one sequence: x (SEQ, WIDTH)
        h = jax.vmap(self.ln1)(x)
        x = x + self.attn(h, h, h, mask=mask)
        h = jax.nn.gelu(jax.vmap(self.fc)(jax.vmap(self.ln2)(x)), approximate=True)
        return x + jax.vmap(self.out)(h)


class _EqxGPT(eqx.Module):
    wte: eqx.nn.Embedding
    wpe: eqx.nn.Embedding
    blocks: list
    lnf: eqx.nn.LayerNorm

    def __init__(self, vocab: int, key):
        keys = jax.random.split(key, DEPTH + 2)
        self.wte = eqx.nn.Embedding(vocab, WIDTH, key=keys[0])
        self.wpe = eqx.nn.Embedding(SEQ, WIDTH, key=keys[1])
        self.blocks = [_EqxBlock(k) for k in keys[2:]]
        self.lnf = eqx.nn.LayerNorm(WIDTH, eps=1e-5)

    def __call__(self, tokens):  # one sequence: tokens (SEQ,)
        x = jax.vmap(self.wte)(tokens) + jax.vmap(self.wpe)(jn.arange(tokens.shape[0]))
        mask = jn.tril(jn.ones((tokens.shape[0], tokens.shape[0]), bool))
        for blk in self.blocks:
            x = blk(x, mask)
        return jax.vmap(self.lnf)(x) @ self.wte.weight.T


def eqx_step(vocab: int):
    tx = optax.adam(LR)
    model = _EqxGPT(vocab, jax.random.key(0))
    model = eqx.tree_at(lambda m: m.wte.weight, model, model.wte.weight * 0.02)  # GPT-2's scale, not N(0, 1)
    state = {'model': model, 'opt': tx.init(eqx.filter(model, eqx.is_array))}

    @eqx.filter_jit
    def train_op(model, opt_state, tokens):
        loss, grads = eqx.filter_value_and_grad(lambda m: next_token_loss(jax.vmap(m)(tokens), tokens))(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    def call(tokens):
        state['model'], state['opt'], loss = train_op(state['model'], state['opt'], tokens)
        return loss

    return call


def time_calls(fn, steps: int) -> float:
    """Seconds per call of fn(), after one call that compiles."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def training_steps(args):
    tokens = jn.asarray(np.random.default_rng(1).integers(0, args.vocab, size=(args.batch, SEQ)), jn.int32)
    steps = {'objax': objax_step(args.vocab), 'pure JAX': jax_step(args.vocab), 'Flax NNX': nnx_step(args.vocab),
             'Equinox': eqx_step(args.vocab)}
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(time_calls(lambda s=step: s(tokens), args.steps))
    base = statistics.median(times['objax'])
    print(f'training step: width {WIDTH}, {DEPTH} layers, {HEADS} heads, sequence {SEQ}, batch {args.batch}, '
          f'vocab {args.vocab}, Adam')
    print(f'{"library":>10} {"step (ms)":>10} {"objax / library":>16}')
    for name, t in times.items():
        t = statistics.median(t)
        print(f'{name:>10} {t * 1e3:10.2f} {base / t:16.3f}')


def decoding(args):
    model = GPT2(vocab_size=args.vocab, n_positions=SEQ, n_embd=WIDTH, n_layer=DEPTH, n_head=HEADS)
    prompt_len, new = 16, SEQ - 16
    prompt = jn.asarray(np.random.default_rng(2).integers(0, args.vocab, size=(args.batch, prompt_len)), jn.int32)
    forward = objax.Jit(lambda t: model(t, training=False), model.vars())

    def recompute():
        buf = jn.zeros((args.batch, SEQ), jn.int32).at[:, :prompt_len].set(prompt)
        for pos in range(prompt_len, SEQ):
            nxt = forward(buf)[:, pos - 1].argmax(-1).astype(jn.int32)
            buf = buf.at[:, pos].set(nxt)
        return buf

    cached = {'cache': [], 'recompute': []}
    for _ in range(args.repeats):
        for name, fn in (('cache', lambda: model.generate(prompt, new)), ('recompute', recompute)):
            jax.block_until_ready(fn())
            start = time.perf_counter()
            out = jax.block_until_ready(fn())
            cached[name].append(time.perf_counter() - start)
    same = np.array_equal(np.asarray(model.generate(prompt, new)), np.asarray(recompute()))
    print(f'greedy decoding: prompt {prompt_len}, {new} new tokens, batch {args.batch} '
          f'(both give the same tokens: {same}; {out.shape[1]} tokens per row)')
    rates = {name: args.batch * new / statistics.median(t) for name, t in cached.items()}
    for name, rate in rates.items():
        print(f'{name:>10} {rate:10.0f} tokens/s')
    print(f'cache speed-up: {rates["cache"] / rates["recompute"]:.2f}x')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=10, help='training steps per timing')
    parser.add_argument('--repeats', type=int, default=5, help='timings per implementation (median kept)')
    parser.add_argument('--batch', type=int, default=8, help='sequences per batch')
    parser.add_argument('--vocab', type=int, default=4096, help='vocabulary size')
    args = parser.parse_args()
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}; flax {flax.__version__}, equinox {eqx.__version__}')
    training_steps(args)
    decoding(args)


if __name__ == '__main__':
    main()
