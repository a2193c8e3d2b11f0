"""Builds the Llama-family fixtures in this folder with transformers, peft and tokenizers.

torch, transformers, peft and tokenizers are needed only to run this script, never by objax or its tests. See
README.md beside this file for the exact installs, the versions used and what every file holds.

Usage:
    python make_llama_fixtures.py [--out DIR]   # writes every fixture (deterministic: fixed seeds)
    python make_llama_fixtures.py --check       # numpy-only checks of the written fixtures
"""

import argparse
import copy
import json
import math
import os
import shutil
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0

# Shared by both models: vocab 128, hidden 64, 2 layers, 4 query heads and 2 kv heads of 16, MLP width 128.
# initializer_range 0.2 (Llama's own is 0.02) spreads the logits, so every greedy step has a clear winner.
COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2, rms_norm_eps=1e-5,
              bos_token_id=1, eos_token_id=2, pad_token_id=None)
# Llama 3 frequency scaling with original_max_position_embeddings 32: with theta 10000 and head_dim 16 the
# wavelengths 2*pi*10000**(2i/16) are 6.3 (kept: < 32/4), 19.9 (smoothed: between 8 and 32), 62.8 and up
# (divided by 8: > 32), so all three branches of the rule are used.
LLAMA_CONFIG = dict(COMMON, head_dim=16, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type='llama3', rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=32))
QWEN2_CONFIG = dict(COMMON, tie_word_embeddings=True, rope_parameters=dict(rope_type='default', rope_theta=10000.0))
LORA_CONFIG = dict(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], lora_dropout=0.0, use_rslora=False,
                   bias='none', task_type='CAUSAL_LM')
PAD = 0             # pad_token_id given to generate (left padding); the models' config has none
NEW_TOKENS = 10
PROMPT_LENGTHS = (3, 6)
SHARD_SIZE = '150KB'
# Special tokens of the tiny tokenizer, in id order; the models use the same bos/eos/pad ids.
SPECIAL_TOKENS = ['<pad>', '<s>', '</s>', '<unk>']
TOKENIZER_TEXT = [
    'the quick brown fox jumps over the lazy dog.',
    'a small model reads the text and writes the next word.',
    'we train the tokenizer on a few short sentences of plain english.',
    'rotary embeddings turn each position into a rotation of the query and the key.',
    'the fox and the dog read a short story together.',
    'low rank adapters train two small matrices next to each frozen weight.',
]
TOKENIZER_EXAMPLES = ['the quick brown fox reads the text.', 'Zebras jump!']


def _top2_margin(logits):
    """Smallest top-1 minus top-2 gap over all rows of logits (..., vocab)."""
    top = np.sort(logits.reshape(-1, logits.shape[-1]), axis=-1)
    return float((top[:, -1] - top[:, -2]).min())


def _perturb(model, torch, bias_std, norm_std):
    """Random biases and RMSNorm scales 1 + noise: constant defaults would hide a loader that drops them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.normal_(0.0, bias_std)
            elif name.endswith('norm.weight'):
                p.copy_(1.0 + norm_std * torch.randn_like(p))


def _fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    return path


def _reference(model, torch, name):
    """Reference outputs shared by both models: logits, loss, long logits, padded batch greedy, eos case."""
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(SEED + 1)
    tokens = torch.randint(0, vocab, (2, 12), generator=g)
    long_tokens = torch.randint(0, vocab, (1, 100), generator=g)
    # Prompts avoid the special ids 0-3 (pad, bos, eos, unk).
    prompts = [torch.randint(4, vocab, (n,), generator=g) for n in PROMPT_LENGTHS]
    width = max(PROMPT_LENGTHS)
    padded = torch.full((2, width), PAD, dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        padded[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    # generate's position ids for left-padded rows: cumsum(mask) - 1, 0 at the pads.
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    f = {}
    with torch.no_grad():
        out = model(tokens, labels=tokens)
        f.update(tokens=tokens, logits=out.logits, loss=out.loss)
        f.update(long_tokens=long_tokens, long_logits=model(long_tokens).logits)
        plog = model(padded, attention_mask=mask, position_ids=position_ids).logits
        plog = plog * mask[..., None]  # pad rows hold no meaningful value: zeroed
        for i, p in enumerate(prompts):  # the padded batch equals each prompt run alone
            alone = model(p[None]).logits[0]
            assert (plog[i, width - len(p):] - alone).abs().max() < 1e-4, 'padded batch differs from alone'
        default_arange = model(padded, attention_mask=mask).logits  # transformers' forward: positions 0..T-1
        shift = (default_arange[0, width - len(prompts[0]):] - plog[0, width - len(prompts[0]):]).abs().max()
        # RoPE is relative: shifting a row's positions changes its logits by rounding only.
        print(f'{name}: shorter padded row, positions 0..T-1 (forward without position_ids) vs generate\'s '
              f'cumsum positions: max logits difference {shift:.3g}')
        f.update(padded_tokens=padded, padded_mask=mask, padded_position_ids=position_ids, padded_logits=plog)

        # Greedy decoding of both prompts in one left-padded batch, eos disabled.
        kw = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=PAD)
        raw = model.generate(padded, attention_mask=mask, eos_token_id=None, **kw)
        assert raw.shape == (2, width + NEW_TOKENS), raw.shape
        rows = [raw[i, width - len(p):] for i, p in enumerate(prompts)]
        margins = []
        for p, row in zip(prompts, rows):
            alone = model.generate(p[None], attention_mask=torch.ones_like(p[None]), eos_token_id=None, **kw)[0]
            assert (alone == row).all(), 'batched greedy differs from the prompt alone'
            decisions = model(row[None]).logits[0, len(p) - 1:-1].numpy()
            assert (decisions.argmax(-1) == row[len(p):].numpy()).all(), 'generate disagrees with argmax'
            margins.append(_top2_margin(decisions))
        new = [row[len(p):].tolist() for p, row in zip(prompts, rows)]
        used = set(sum((r.tolist() for r in rows), []))
        print(f'{name}: greedy new tokens {new}; min top1-top2 logit margin {min(margins):.4g}; '
              f'loss {out.loss.item():.4f}; max |logit| {out.logits.abs().max().item():.3f}')
        assert min(margins) > 1e-3, margins
        assert all(len(set(n)) > 2 for n in new), 'degenerate greedy output'
        # The config's eos id (2) must not occur, so that generation with the saved config runs all 10 steps.
        eos = model.config.eos_token_id
        assert eos not in used, f'eos {eos} occurs in the greedy outputs'
        again = model.generate(padded, attention_mask=mask, eos_token_id=eos, **kw)
        assert (again == raw).all()
        f.update(prompt_a=prompts[0], prompt_b=prompts[1], greedy_a=rows[0], greedy_b=rows[1],
                 greedy_output=raw, eos_token_id=eos, pad_token_id=PAD)

        # A row that hits eos early: the first new token of row a (from its 3rd on) that occurs nowhere else.
        for k in range(2, NEW_TOKENS - 2):
            t = new[0][k]
            if t not in new[0][:k] and t not in new[1] and t not in prompts[0].tolist() + prompts[1].tolist():
                break
        else:
            raise AssertionError('no eos candidate')
        raw = model.generate(padded, attention_mask=mask, eos_token_id=t, **kw)
        a = raw[0, width - len(prompts[0]):width + k + 1]
        assert (a == rows[0][:len(prompts[0]) + k + 1]).all() and (raw[0, width + k + 1:] == PAD).all()
        assert (raw[1] == rows[1]).all()
        print(f'{name}: eos case: eos {t}, row a stops after {k + 1} new tokens; output {raw.tolist()}')
        f.update(eos_case_eos_token_id=t, eos_case_output=raw, eos_case_a=a, eos_case_b=rows[1])

    arrays = {}
    for k, v in f.items():
        v = v.detach().numpy() if hasattr(v, 'detach') else np.asarray(v)
        arrays[k] = v.astype(np.float32) if v.dtype.kind == 'f' else v.astype(np.int32)
    return arrays


def make_llama(out):
    import torch
    import transformers

    torch.manual_seed(SEED)
    config = transformers.LlamaConfig(**LLAMA_CONFIG)
    model = transformers.LlamaForCausalLM(config)
    _perturb(model, torch, bias_std=0.0, norm_std=0.2)
    model.eval()
    directory = _fresh_dir(os.path.join(out, 'llama_tiny'))
    model.save_pretrained(directory)
    arrays = _reference(model, torch, 'llama')
    np.savez(os.path.join(out, 'llama_tiny_reference.npz'), **arrays)

    # The same model without the llama3 scaling: the long logits must differ clearly.
    plain = copy.deepcopy(LLAMA_CONFIG)
    plain['rope_parameters'] = dict(rope_type='default', rope_theta=10000.0)
    unscaled = transformers.LlamaForCausalLM(transformers.LlamaConfig(**plain))
    unscaled.load_state_dict(model.state_dict())
    unscaled.eval()
    with torch.no_grad():
        d = (unscaled(torch.from_numpy(arrays['long_tokens']).long()).logits.numpy() - arrays['long_logits'])
    d = np.abs(d).max(-1)[0]
    print(f'llama: |logits without llama3 scaling - with| max over vocab: position 0 {d[0]:.3g}, '
          f'positions 1-31 max {d[1:32].max():.3g}, 32-99 max {d[32:].max():.3g}')
    assert d[32:].max() > 0.5

    # Legacy layout: rope_theta and rope_scaling at the top level, as published checkpoints carry them
    # (e.g. Llama-3.2-1B). Weights: llama_tiny/model.safetensors (not duplicated here).
    with open(os.path.join(directory, 'config.json')) as fp:
        legacy = json.load(fp)
    rope = legacy.pop('rope_parameters')
    legacy['rope_theta'] = rope.pop('rope_theta')
    legacy['rope_scaling'] = dict(sorted(rope.items()))
    legacy['torch_dtype'] = legacy.pop('dtype')
    legacy = dict(sorted(legacy.items()))
    legacy_dir = _fresh_dir(os.path.join(out, 'llama_tiny_legacy_config'))
    os.makedirs(legacy_dir)
    with open(os.path.join(legacy_dir, 'config.json'), 'w') as fp:
        json.dump(legacy, fp, indent=2)
        fp.write('\n')
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        shutil.copy(os.path.join(legacy_dir, 'config.json'), tmp)
        shutil.copy(os.path.join(directory, 'model.safetensors'), tmp)
        reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp).eval()
        assert reloaded.config.rope_parameters == model.config.rope_parameters, reloaded.config.rope_parameters
        same = (reloaded(torch.from_numpy(arrays['long_tokens']).long()).logits.numpy() == arrays['long_logits'])
        assert same.all(), 'legacy config gives other logits'

    sharded = _fresh_dir(os.path.join(out, 'llama_tiny_sharded'))
    model.save_pretrained(sharded, max_shard_size=SHARD_SIZE)
    shards = [f for f in os.listdir(sharded) if f.endswith('.safetensors')]
    assert len(shards) >= 2, shards
    with torch.no_grad():
        reloaded = transformers.LlamaForCausalLM.from_pretrained(sharded).eval()
        assert (reloaded(torch.from_numpy(arrays['tokens']).long()).logits.numpy() == arrays['logits']).all()
    print(f'llama: sharded into {sorted(shards)}')
    return model, arrays


def make_adapter(out, model, arrays):
    import peft
    import torch
    import transformers

    torch.manual_seed(SEED + 3)
    lora = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(**LORA_CONFIG))
    # peft's init: A kaiming-uniform, B zero (no change). Both random so the adapter changes the logits.
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if 'lora_A' in name:
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
            elif 'lora_B' in name:
                p.normal_(0.0, 0.2)
    lora.eval()
    # base_model_name_or_path would record this machine's absolute path: a relative name instead.
    lora.peft_config['default'].base_model_name_or_path = 'llama_tiny'
    # peft holds target_modules as a set, written in hash order (varies between runs): a sorted list instead.
    lora.peft_config['default'].target_modules = sorted(lora.peft_config['default'].target_modules)
    directory = _fresh_dir(os.path.join(out, 'llama_tiny_adapter'))
    lora.save_pretrained(directory, save_embedding_layers=False)  # no hub look-up for a vocabulary change
    readme = os.path.join(directory, 'README.md')  # peft's model card template: not needed to load
    if os.path.exists(readme):
        os.remove(readme)
    tokens = torch.from_numpy(arrays['tokens']).long()
    with torch.no_grad():
        logits = lora(input_ids=tokens).logits.numpy()
        base = transformers.LlamaForCausalLM.from_pretrained(os.path.join(out, 'llama_tiny')).eval()
        again = peft.PeftModel.from_pretrained(base, directory).eval()
        assert (again(input_ids=tokens).logits.numpy() == logits).all(), 'reloaded adapter differs'
    change = np.abs(logits - arrays['logits']).max()
    print(f'adapter: max |peft logits - base logits| {change:.3g}')
    assert change > 0.5
    np.savez(os.path.join(out, 'llama_tiny_adapter_reference.npz'), tokens=arrays['tokens'],
             logits=logits.astype(np.float32))


def make_qwen2(out):
    import torch
    import transformers

    torch.manual_seed(SEED)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**QWEN2_CONFIG))
    _perturb(model, torch, bias_std=0.5, norm_std=0.2)
    model.eval()
    directory = _fresh_dir(os.path.join(out, 'qwen2_tiny'))
    model.save_pretrained(directory)
    arrays = _reference(model, torch, 'qwen2')
    np.savez(os.path.join(out, 'qwen2_tiny_reference.npz'), **arrays)
    nobias = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in nobias.named_parameters():
            if name.endswith('bias'):
                p.zero_()
        d = np.abs(nobias(torch.from_numpy(arrays['tokens']).long()).logits.numpy() - arrays['logits']).max()
    print(f'qwen2: max |logits with zero biases - logits| {d:.3g}')
    assert d > 0.5


def make_tokenizer(out):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=128, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(TOKENIZER_TEXT, trainer=trainer)
    directory = os.path.join(out, 'tokenizer')
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, 'tokenizer.json'))
    assert tok.get_vocab_size() <= 128, tok.get_vocab_size()
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    print(f'tokenizer: vocab size {tok.get_vocab_size()}')
    for text in TOKENIZER_EXAMPLES:
        enc = tok.encode(text)
        print(f'tokenizer: {text!r} -> ids {enc.ids} tokens {enc.tokens} -> decoded {tok.decode(enc.ids)!r}')


# ---------------------------------------------------------------------------------------------------------------
# numpy-only checks (no torch): an independent float64 forward pass over the saved tensors.

def rope_settings(config):
    """(theta, rope_type, parameters) from either config layout; refuses what it does not know."""
    if 'rope_parameters' in config:
        params = dict(config['rope_parameters'])
        theta = params.pop('rope_theta')
    else:
        theta = config['rope_theta']
        params = dict(config.get('rope_scaling') or {'rope_type': 'default'})
    kind = params.pop('rope_type', params.pop('type', 'default'))
    assert kind in ('default', 'llama3'), kind
    return theta, kind, params


def inv_freq(config):
    theta, kind, params = rope_settings(config)
    d = config.get('head_dim') or config['hidden_size'] // config['num_attention_heads']
    freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    if kind == 'llama3':
        old = params['original_max_position_embeddings']
        factor, low, high = params['factor'], params['low_freq_factor'], params['high_freq_factor']
        wavelen = 2 * math.pi / freq
        smooth = (old / wavelen - low) / (high - low)
        freq = np.where(wavelen < old / high, freq,                 # high frequency: kept
                        np.where(wavelen > old / low, freq / factor,  # low frequency: divided by factor
                                 (1 - smooth) * freq / factor + smooth * freq))
    return freq


def _rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def numpy_llama(p, config, tokens, position_ids=None, attention_mask=None):
    """Llama / Qwen2 logits in float64 numpy. torch Linear weights (out, in): y = x @ W.T + b."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    heads, kv_heads = config['num_attention_heads'], config['num_key_value_heads']
    d = config.get('head_dim') or config['hidden_size'] // heads
    eps = config['rms_norm_eps']
    b, t = tokens.shape
    if position_ids is None:
        position_ids = np.broadcast_to(np.arange(t), (b, t))
    allowed = np.tril(np.ones((t, t), bool))[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.astype(bool)[:, None, None, :]
    angles = position_ids[..., None] * inv_freq(config)      # (b, t, d/2)
    angles = np.concatenate([angles, angles], -1)[:, None]    # (b, 1, t, d): rotate-half layout
    cos, sin = np.cos(angles), np.sin(angles)

    def linear(x, name):
        y = x @ p[name + '.weight'].T
        return y + p[name + '.bias'] if name + '.bias' in p else y

    h = p['model.embed_tokens.weight'][tokens]
    for i in range(config['num_hidden_layers']):
        pre = f'model.layers.{i}.'
        x = _rms_norm(h, p[pre + 'input_layernorm.weight'], eps)
        q, k, v = (linear(x, pre + 'self_attn.' + n).reshape(b, t, -1, d).transpose(0, 2, 1, 3)
                   for n in ('q_proj', 'k_proj', 'v_proj'))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # kv head j serves query heads j*g .. (j+1)*g-1 (torch.repeat_interleave on the head axis)
        k, v = (np.repeat(z, heads // kv_heads, axis=1) for z in (k, v))
        s = np.where(allowed, q @ k.swapaxes(-1, -2) / math.sqrt(d), -1e30)
        a = (_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(b, t, heads * d)
        h = h + linear(a, pre + 'self_attn.o_proj')
        x = _rms_norm(h, p[pre + 'post_attention_layernorm.weight'], eps)
        gate = linear(x, pre + 'mlp.gate_proj')
        h = h + linear(gate / (1 + np.exp(-gate)) * linear(x, pre + 'mlp.up_proj'), pre + 'mlp.down_proj')
    h = _rms_norm(h, p['model.norm.weight'], eps)
    head = p['model.embed_tokens.weight'] if config['tie_word_embeddings'] else p['lm_head.weight']
    return h @ head.T


def _load_dir(directory):
    from safetensors.numpy import load_file

    with open(os.path.join(directory, 'config.json')) as fp:
        config = json.load(fp)
    index = os.path.join(directory, 'model.safetensors.index.json')
    if os.path.exists(index):
        with open(index) as fp:
            files = sorted(set(json.load(fp)['weight_map'].values()))
    else:
        files = ['model.safetensors']
    params = {}
    for f in files:
        params.update(load_file(os.path.join(directory, f)))
    return config, params


def _rel(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def _greedy(p, config, prompt, steps, eos=None):
    seq = list(prompt)
    for _ in range(steps):  # recomputes the whole prefix each step
        seq.append(int(numpy_llama(p, config, np.array([seq]))[0, -1].argmax()))
        if seq[-1] == eos:
            break
    return np.array(seq)


def _check_model(out, name, config, params):
    ref = np.load(os.path.join(out, f'{name}_reference.npz'))
    errs = {}
    logits = numpy_llama(params, config, ref['tokens'])
    errs['logits'] = _rel(logits, ref['logits'])
    errs['long_logits'] = _rel(numpy_llama(params, config, ref['long_tokens']), ref['long_logits'])
    mask = ref['padded_mask']
    plog = numpy_llama(params, config, ref['padded_tokens'], ref['padded_position_ids'], mask) * mask[..., None]
    errs['padded_logits'] = _rel(plog, ref['padded_logits'])
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    loss = -np.take_along_axis(lp[:, :-1], ref['tokens'][:, 1:, None], -1).mean()
    errs['loss'] = abs(float(loss) - float(ref['loss']))
    ok = all(e < 1e-4 for e in errs.values())
    eos = int(ref['eos_token_id'])
    for row in 'ab':
        ok &= np.array_equal(_greedy(params, config, ref['prompt_' + row], NEW_TOKENS, eos), ref['greedy_' + row])
        ok &= np.array_equal(_greedy(params, config, ref['prompt_' + row], NEW_TOKENS,
                                     int(ref['eos_case_eos_token_id'])), ref['eos_case_' + row])
    print(f'check {name}: ' + ', '.join(f'{k} {v:.3g}' for k, v in errs.items())
          + f' (relative to the largest |logit|; loss absolute); greedy and eos case equal: {ok}')
    return ok, ref


def check(out):
    from safetensors.numpy import load_file

    ok = True
    config, params = _load_dir(os.path.join(out, 'llama_tiny'))
    good, ref = _check_model(out, 'llama_tiny', config, params)
    ok &= good
    # Both config layouts and the sharded copy hold the same model.
    with open(os.path.join(out, 'llama_tiny_legacy_config', 'config.json')) as fp:
        legacy = json.load(fp)
    ok &= np.array_equal(inv_freq(legacy), inv_freq(config))
    ok &= all(legacy[k] == v for k, v in config.items() if k not in ('rope_parameters', 'dtype',
                                                                         'transformers_version'))
    sharded_config, sharded = _load_dir(os.path.join(out, 'llama_tiny_sharded'))
    ok &= sharded_config == config and sharded.keys() == params.keys()
    ok &= all(np.array_equal(sharded[k], params[k]) for k in params)
    print(f'check llama: legacy config and sharded copy agree: {bool(ok)}; inv_freq {inv_freq(config)}')

    # The adapter: W + (lora_alpha / r) * B @ A on q_proj and v_proj.
    directory = os.path.join(out, 'llama_tiny_adapter')
    with open(os.path.join(directory, 'adapter_config.json')) as fp:
        adapter = json.load(fp)
    lora = load_file(os.path.join(directory, 'adapter_model.safetensors'))
    scale = adapter['lora_alpha'] / adapter['r']
    merged = dict(params)
    for key in lora:
        if '.lora_A.' in key:
            target = key.replace('base_model.model.', '', 1).replace('.lora_A.weight', '.weight')
            b = lora[key.replace('.lora_A.', '.lora_B.')].astype(np.float64)
            merged[target] = params[target] + scale * b @ lora[key].astype(np.float64)
    aref = np.load(os.path.join(out, 'llama_tiny_adapter_reference.npz'))
    err = _rel(numpy_llama(merged, config, aref['tokens']), aref['logits'])
    print(f'check adapter: {len(lora)} lora tensors, logits {err:.3g}')
    ok &= err < 1e-4

    config, params = _load_dir(os.path.join(out, 'qwen2_tiny'))
    ok &= 'lm_head.weight' not in params
    good, _ = _check_model(out, 'qwen2_tiny', config, params)
    ok &= good
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
        model, arrays = make_llama(args.out)
        make_adapter(args.out, model, arrays)
        make_qwen2(args.out)
        make_tokenizer(args.out)
    check(args.out)


if __name__ == '__main__':
    main()
