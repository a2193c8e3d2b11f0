"""Builds the pretrained-model and layer fixtures in this folder with PyTorch, transformers and timm.

torch, transformers and timm are needed only to run this script, never by objax or its tests. See README.md
beside this file for the exact installs, the versions used and what every file holds.

Usage:
    python make_fixtures.py [--out DIR]   # writes every fixture (deterministic: fixed seeds)
    python make_fixtures.py --check       # numpy-only checks of the written GPT-2 and ViT fixtures
"""

import argparse
import json
import math
import os
import shutil

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0

# initializer_range 0.25 (GPT-2's own is 0.02) spreads the logits, so every greedy step has a clear winner;
# no bos/eos token (GPT-2's 50256 lies outside this vocabulary), so generate never stops early.
GPT2_CONFIG = dict(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4, initializer_range=0.25,
                   bos_token_id=None, eos_token_id=None)
GPT2_NEW_TOKENS = 10
VIT_CONFIG = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
                  num_classes=10)


def _perturb_defaults(model, torch, bias_std, norm_std):
    """Replaces the constant default initialisations (zero biases, unit norm scales) by random values.

    A zero bias or a unit LayerNorm scale would hide a loader that drops or swaps those tensors.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.normal_(0.0, bias_std)
            elif p.ndim == 1 and ('ln' in name or 'norm' in name):
                p.copy_(1.0 + norm_std * torch.randn_like(p))


def _top2_margin(logits):
    """Smallest top-1 minus top-2 gap over all rows of logits (..., vocab)."""
    top = np.sort(logits.reshape(-1, logits.shape[-1]), axis=-1)
    return float((top[:, -1] - top[:, -2]).min())


def make_gpt2(out):
    import torch
    import transformers

    torch.manual_seed(SEED)
    config = transformers.GPT2Config(**GPT2_CONFIG)
    model = transformers.GPT2LMHeadModel(config)
    _perturb_defaults(model, torch, bias_std=0.1, norm_std=0.1)
    model.eval()
    directory = os.path.join(out, 'gpt2_tiny')
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    model.save_pretrained(directory, safe_serialization=True)

    g = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, config.vocab_size, (2, 12), generator=g)
    prompt = torch.randint(0, config.vocab_size, (2, 5), generator=g)
    with torch.no_grad():
        result = model(tokens, labels=tokens)
        greedy = model.generate(prompt, max_new_tokens=GPT2_NEW_TOKENS, do_sample=False,
                                attention_mask=torch.ones_like(prompt), pad_token_id=0)
        # Logits of the whole greedy sequence: the decision at each step is the row before each new token.
        decisions = model(greedy).logits[:, prompt.shape[1] - 1:-1].numpy()
    greedy = greedy.numpy()
    assert greedy.shape == (2, prompt.shape[1] + GPT2_NEW_TOKENS), greedy.shape
    assert (decisions.argmax(-1) == greedy[:, prompt.shape[1]:]).all(), 'generate disagrees with argmax'
    margin = _top2_margin(decisions)
    print(f'gpt2: greedy tokens {greedy.tolist()}')
    print(f'gpt2: min top1-top2 logit margin over the {GPT2_NEW_TOKENS} generation steps: {margin:.4g}')
    print(f'gpt2: loss {result.loss.item():.6f}, max |logit| {result.logits.abs().max().item():.4f}')
    assert margin > 1e-3, margin
    assert len({tuple(row) for row in greedy[:, prompt.shape[1]:].T.tolist()}) > 2, 'degenerate greedy output'
    np.savez(os.path.join(out, 'gpt2_tiny_reference.npz'),
             tokens=tokens.numpy().astype(np.int32),
             logits=result.logits.numpy().astype(np.float32),
             loss=np.float32(result.loss.item()),
             prompt=prompt.numpy().astype(np.int32),
             greedy=greedy.astype(np.int32))


def make_vit(out):
    import safetensors.torch
    import timm.models.vision_transformer
    import torch

    torch.manual_seed(SEED)
    model = timm.models.vision_transformer.VisionTransformer(**VIT_CONFIG)
    # timm's init (weights std 0.02, cls token std 1e-6) gives nearly the same logits for every image: weights
    # drawn at std 1/sqrt(fan_in) and larger embeddings make the logits depend on the image.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and name.endswith('weight'):
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
        model.cls_token.normal_(0.0, 0.5)
        model.pos_embed.normal_(0.0, 0.5)
    _perturb_defaults(model, torch, bias_std=0.05, norm_std=0.1)
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, os.path.join(out, 'vit_tiny.safetensors'))
    g = torch.Generator().manual_seed(SEED + 2)
    images = torch.randn((3, 3, 32, 32), generator=g)
    with torch.no_grad():
        logits = model(images).numpy()
    print(f'vit: logits {np.round(logits, 3).tolist()}')
    spread = min(np.abs(logits[i] - logits[j]).max() for i in range(3) for j in range(i))
    print(f'vit: smallest max |logits difference| between two images: {spread:.3g}')
    assert spread > 0.3, spread
    np.savez(os.path.join(out, 'vit_tiny_reference.npz'), images=images.numpy().astype(np.float32),
             logits=logits.astype(np.float32))


def make_torch_layers(out):
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    f = {}

    # LayerNorm(16), eps 1e-5, random scale and shift.
    layer = nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        layer.weight.copy_(1.0 + 0.5 * torch.randn(16))
        layer.bias.copy_(0.5 * torch.randn(16))
    x = 2.0 * torch.randn(3, 5, 16) + 0.5
    f.update(layernorm_x=x, layernorm_weight=layer.weight, layernorm_bias=layer.bias, layernorm_y=layer(x))

    # RMSNorm(16), eps 1e-6, random scale.
    layer = nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        layer.weight.copy_(1.0 + 0.5 * torch.randn(16))
    x = 2.0 * torch.randn(3, 5, 16) + 0.5
    f.update(rmsnorm_x=x, rmsnorm_weight=layer.weight, rmsnorm_y=layer(x))

    # MultiheadAttention(16, 4 heads, batch_first), fused in_proj (q, k, v rows stacked), random biases.
    mha = nn.MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True, kdim=16, vdim=16)
    mha.eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_(0.0, 0.2)
        mha.out_proj.bias.normal_(0.0, 0.2)
    x = torch.randn(2, 6, 16)
    context = torch.randn(2, 4, 16)
    causal_torch = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)  # True = not allowed
    padding_torch = torch.zeros(2, 6, dtype=torch.bool)
    padding_torch[1, -2:] = True  # True = padded key, ignored
    with torch.no_grad():
        def attend(q, kv, **kw):
            return mha(q, kv, kv, need_weights=False, **kw)[0]
        f.update(mha_in_proj_weight=mha.in_proj_weight, mha_in_proj_bias=mha.in_proj_bias,
                 mha_out_proj_weight=mha.out_proj.weight, mha_out_proj_bias=mha.out_proj.bias,
                 mha_x=x, mha_context=context,
                 mha_causal_torch_mask=causal_torch, mha_causal_mask=~causal_torch,
                 mha_padding_torch_mask=padding_torch, mha_padding_mask=~padding_torch,
                 mha_self_y=attend(x, x),
                 mha_causal_y=attend(x, x, attn_mask=causal_torch),
                 mha_padding_y=attend(x, x, key_padding_mask=padding_torch),
                 mha_causal_padding_y=attend(x, x, attn_mask=causal_torch, key_padding_mask=padding_torch),
                 mha_cross_y=attend(x, context))

    # GRUCell(8, 12) and LSTMCell(8, 12), torch's default random init (biases included).
    x = torch.randn(3, 8)
    x_seq = torch.randn(5, 3, 8)
    f.update(rnn_x=x, rnn_x_seq=x_seq)
    gru = nn.GRUCell(8, 12)
    h0 = torch.randn(3, 12)
    with torch.no_grad():
        h, hs = h0, []
        for xt in x_seq:
            h = gru(xt, h)
            hs.append(h)
        f.update(gru_weight_ih=gru.weight_ih, gru_weight_hh=gru.weight_hh, gru_bias_ih=gru.bias_ih,
                 gru_bias_hh=gru.bias_hh, gru_h0=h0, gru_h1=gru(x, h0), gru_h_seq=torch.stack(hs))
    lstm = nn.LSTMCell(8, 12)
    h0, c0 = torch.randn(3, 12), torch.randn(3, 12)
    with torch.no_grad():
        h1, c1 = lstm(x, (h0, c0))
        h, c, hs, cs = h0, c0, [], []
        for xt in x_seq:
            h, c = lstm(xt, (h, c))
            hs.append(h)
            cs.append(c)
        f.update(lstm_weight_ih=lstm.weight_ih, lstm_weight_hh=lstm.weight_hh, lstm_bias_ih=lstm.bias_ih,
                 lstm_bias_hh=lstm.bias_hh, lstm_h0=h0, lstm_c0=c0, lstm_h1=h1, lstm_c1=c1,
                 lstm_h_seq=torch.stack(hs), lstm_c_seq=torch.stack(cs))

    # Activations on 101 points of [-6, 6].
    x = torch.linspace(-6.0, 6.0, 101)
    f.update(act_x=x, gelu_y=nn.GELU()(x), gelu_tanh_y=nn.GELU(approximate='tanh')(x), silu_y=nn.SiLU()(x))

    arrays = {}
    for k, v in f.items():
        v = v.detach().numpy()
        arrays[k] = v if v.dtype == np.bool_ else v.astype(np.float32)
    np.savez(os.path.join(out, 'torch_layers.npz'), **arrays)
    print(f'torch_layers: {len(arrays)} arrays')


# ---------------------------------------------------------------------------------------------------------------
# numpy-only checks (no torch): independent forward passes over the saved tensors.

def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


_erf = np.vectorize(math.erf)


def _gelu_exact(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _attention(q, k, v, causal):
    """q, k, v (batch, heads, T, head_dim) -> (batch, heads, T, head_dim)."""
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        t = s.shape[-1]
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    return _softmax(s) @ v


def _split_heads(x, heads):
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def numpy_gpt2(p, config, tokens):
    """GPT-2 logits in float64 numpy. Conv1D weights are (in, out); the output head is wte (tied)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    eps, heads = config['layer_norm_epsilon'], config['n_head']
    t = tokens.shape[1]
    h = p['transformer.wte.weight'][tokens] + p['transformer.wpe.weight'][:t]
    for i in range(config['n_layer']):
        pre = f'transformer.h.{i}.'
        a = _layer_norm(h, p[pre + 'ln_1.weight'], p[pre + 'ln_1.bias'], eps)
        qkv = a @ p[pre + 'attn.c_attn.weight'] + p[pre + 'attn.c_attn.bias']
        q, k, v = (_split_heads(z, heads) for z in np.split(qkv, 3, axis=-1))
        a = _merge_heads(_attention(q, k, v, causal=True))
        h = h + a @ p[pre + 'attn.c_proj.weight'] + p[pre + 'attn.c_proj.bias']
        m = _layer_norm(h, p[pre + 'ln_2.weight'], p[pre + 'ln_2.bias'], eps)
        m = _gelu_tanh(m @ p[pre + 'mlp.c_fc.weight'] + p[pre + 'mlp.c_fc.bias'])
        h = h + m @ p[pre + 'mlp.c_proj.weight'] + p[pre + 'mlp.c_proj.bias']
    h = _layer_norm(h, p['transformer.ln_f.weight'], p['transformer.ln_f.bias'], eps)
    return h @ p['transformer.wte.weight'].T


def numpy_vit(p, config, images, eps=1e-6):
    """timm VisionTransformer logits in float64 numpy: cls token, learned pos embed, pre-norm blocks."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    heads, ps = config['num_heads'], config['patch_size']
    b, c, hh, ww = images.shape
    x = images.astype(np.float64).reshape(b, c, hh // ps, ps, ww // ps, ps).transpose(0, 2, 4, 1, 3, 5)
    x = x.reshape(b, (hh // ps) * (ww // ps), c * ps * ps)  # patches row-major, each flattened (C, ph, pw)
    w = p['patch_embed.proj.weight']  # (embed, C, ph, pw) conv kernel with stride = patch
    x = x @ w.reshape(w.shape[0], -1).T + p['patch_embed.proj.bias']
    cls = np.broadcast_to(p['cls_token'], (b, 1, x.shape[-1]))
    x = np.concatenate([cls, x], axis=1) + p['pos_embed']
    for i in range(config['depth']):
        pre = f'blocks.{i}.'
        a = _layer_norm(x, p[pre + 'norm1.weight'], p[pre + 'norm1.bias'], eps)
        qkv = a @ p[pre + 'attn.qkv.weight'].T + p[pre + 'attn.qkv.bias']  # torch Linear: (out, in)
        q, k, v = (_split_heads(z, heads) for z in np.split(qkv, 3, axis=-1))
        a = _merge_heads(_attention(q, k, v, causal=False))
        x = x + a @ p[pre + 'attn.proj.weight'].T + p[pre + 'attn.proj.bias']
        m = _layer_norm(x, p[pre + 'norm2.weight'], p[pre + 'norm2.bias'], eps)
        m = _gelu_exact(m @ p[pre + 'mlp.fc1.weight'].T + p[pre + 'mlp.fc1.bias'])
        x = x + m @ p[pre + 'mlp.fc2.weight'].T + p[pre + 'mlp.fc2.bias']
    x = _layer_norm(x, p['norm.weight'], p['norm.bias'], eps)
    return x[:, 0] @ p['head.weight'].T + p['head.bias']


def check(out):
    from safetensors.numpy import load_file

    ok = True
    directory = os.path.join(out, 'gpt2_tiny')
    with open(os.path.join(directory, 'config.json')) as fp:
        config = json.load(fp)
    params = load_file(os.path.join(directory, 'model.safetensors'))
    ref = np.load(os.path.join(out, 'gpt2_tiny_reference.npz'))
    logits = numpy_gpt2(params, config, ref['tokens'])
    err = np.abs(logits - ref['logits']).max() / np.abs(ref['logits']).max()
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    labels = ref['tokens'][:, 1:]
    loss = -np.take_along_axis(lp[:, :-1], labels[..., None], -1).mean()
    seq = ref['greedy'].copy()
    n = ref['prompt'].shape[1]
    for i in range(n, seq.shape[1]):  # greedy decoding by recomputing the whole prefix
        seq[:, i] = numpy_gpt2(params, config, seq[:, :i])[:, -1].argmax(-1)
    print(f'check gpt2: max |logits - reference| / max |reference| = {err:.3g}; '
          f'loss {loss:.6f} vs {float(ref["loss"]):.6f}; greedy equal: {(seq == ref["greedy"]).all()}')
    ok &= err < 1e-4 and abs(loss - ref['loss']) < 1e-4 and bool((seq == ref['greedy']).all())

    params = load_file(os.path.join(out, 'vit_tiny.safetensors'))
    ref = np.load(os.path.join(out, 'vit_tiny_reference.npz'))
    logits = numpy_vit(params, VIT_CONFIG, ref['images'])
    err = np.abs(logits - ref['logits']).max() / np.abs(ref['logits']).max()
    print(f'check vit: max |logits - reference| / max |reference| = {err:.3g}')
    ok &= err < 1e-4
    if not ok:
        raise SystemExit('check failed')
    print('check: ok')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=HERE, help='output folder (default: the folder of this script)')
    parser.add_argument('--check', action='store_true', help='only run the numpy checks on existing fixtures')
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.check:
        make_gpt2(args.out)
        make_vit(args.out)
        make_torch_layers(args.out)
    check(args.out)


if __name__ == '__main__':
    main()
