"""The live round trip of objax's Llama files into transformers and peft: objax writes LoRA adapters (save_adapter)
and merged, sharded weights (merge_lora + save_pretrained) of the tiny Llama and Qwen2 fixtures (with the blocks
in a ModuleList and in a Stack), and new models in float32 and bfloat16; transformers and peft load them and their
logits are compared with objax's.

Two steps, in two environments (objax's tests need neither torch, transformers nor peft):

    python tests/data/pretrained/llama_roundtrip.py write DIR    # with objax: writes the folders and objax's logits
    /tmp/fixenv/bin/python tests/data/pretrained/llama_roundtrip.py check DIR  # with torch, transformers, peft

`check` prints max |transformers - objax| / max |objax| per folder.
"""

import sys

import numpy as np

DATA = __file__.rsplit('/', 1)[0]
TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')


def write(out):
    import jax.numpy as jn

    import objax
    from objax.zoo.llama import Llama, LlamaConfig

    logits = {}
    for name in ('llama_tiny', 'qwen2_tiny'):
        for stack in (False, True):
            tag = f'{name}_{"stack" if stack else "list"}'
            tokens = np.load(f'{DATA}/{name}_reference.npz')['tokens']
            objax.random.DEFAULT_GENERATOR.seed(1)
            model = Llama.from_pretrained(f'{DATA}/{name}', stack=stack)
            for var in objax.nn.add_lora(model, 4, 8, TARGETS).values():  # trained-looking adapters
                var.assign(objax.random.normal(var.value.shape, stddev=0.1))
            logits[f'{tag}_tokens'] = tokens
            logits[f'{tag}_adapter'] = np.asarray(model(tokens))
            model.save_adapter(f'{out}/{tag}_adapter')
            objax.nn.merge_lora(model)
            logits[f'{tag}_merged'] = np.asarray(model(tokens))
            model.save_pretrained(f'{out}/{tag}_merged', max_shard_size='100KB')
    # Models made by objax (config.json written by LlamaConfig.to_dict), sequences beyond the original context.
    config = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, rope_theta=5e5,
                         rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                                       'high_freq_factor': 4.0, 'original_max_position_embeddings': 16},
                         attention_bias=True, eos_token_id=[3, 4], bos_token_id=1)
    tokens = np.random.default_rng(0).integers(0, 96, (2, 40)).astype(np.int32)
    for dtype in ('float32', 'bfloat16'):
        objax.random.DEFAULT_GENERATOR.seed(2)
        model = Llama(config, dtype=getattr(jn, dtype), initializer_range=0.3)
        logits[f'new_{dtype}_tokens'] = tokens
        logits[f'new_{dtype}'] = np.asarray(model(tokens).astype(jn.float32))
        model.save_pretrained(f'{out}/new_{dtype}')
    np.savez(f'{out}/objax_logits.npz', **logits)


def check(out):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ref = np.load(f'{out}/objax_logits.npz')

    def rel(a, b):
        b = np.asarray(b, np.float64)
        return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())

    def logits(model, tokens):
        with torch.no_grad():
            return model(torch.tensor(tokens, dtype=torch.long)).logits.float().numpy()

    for name in ('llama_tiny', 'qwen2_tiny'):
        for kind in ('list', 'stack'):
            tag = f'{name}_{kind}'
            tokens = ref[f'{tag}_tokens']
            base = AutoModelForCausalLM.from_pretrained(f'{DATA}/{name}').eval()
            adapted = PeftModel.from_pretrained(base, f'{out}/{tag}_adapter').eval()
            print(f'{tag}: PeftModel with objax\'s adapter: {rel(logits(adapted, tokens), ref[tag + "_adapter"]):.2e}')
            merged = AutoModelForCausalLM.from_pretrained(f'{out}/{tag}_merged').eval()
            error = rel(logits(merged, tokens), ref[tag + '_merged'])
            print(f'{tag}: transformers, merged sharded weights: {error:.2e}')
    for dtype in ('float32', 'bfloat16'):
        model = AutoModelForCausalLM.from_pretrained(f'{out}/new_{dtype}').eval()
        print(f'new model, {model.dtype}: {rel(logits(model, ref[f"new_{dtype}_tokens"]), ref[f"new_{dtype}"]):.2e}')


if __name__ == '__main__':
    {'write': write, 'check': check}[sys.argv[1]](sys.argv[2])
