"""objax.zoo.vit.ViT against timm: a tiny VisionTransformer's state dict saved as safetensors and the logits timm
computed (tests/data/pretrained); refused files and loading onto a 2x4 CPU mesh."""

import jax.numpy as jn
import numpy as np
import pytest
import safetensors.numpy
from _pretrained import DATA, relative_error
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import objax
from objax.io import ShapeMismatchError
from objax.zoo.vit import ViT

FILE = DATA / 'vit_tiny.safetensors'
REF = dict(np.load(DATA / 'vit_tiny_reference.npz'))
SIZES = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def test_logits_equal_timm_eagerly_and_under_jit():
    model = ViT.from_pretrained(FILE, **SIZES)
    assert relative_error(model(REF['images']), REF['logits']) < 1e-4
    jitted = objax.Jit(lambda x: model(x, training=False), model.vars())
    assert relative_error(jitted(REF['images']), REF['logits']) < 1e-4
    assert model.patch_embed.w.value.shape == (8, 8, 3, 64) and model.pos_embed.value.shape == (1, 17, 64)


def test_random_model_shapes_and_checks():
    model = ViT(**SIZES)
    assert model(jn.zeros((2, 3, 32, 32))).shape == (2, 10)
    assert len(model.vars().subset(objax.TrainVar)) == 2 + 2 + 2 + 2 + 16 * 2  # patch conv, tokens, norm, head
    with pytest.raises(ValueError, match=r'expected images of shape \(N, 3, 32, 32\), got \(2, 32, 32, 3\)'):
        model(jn.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match='img_size .* multiple of patch_size'):
        ViT(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match='embed_dim .* multiple of num_heads'):
        ViT(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match='depth must be a positive integer'):
        ViT(depth=0)


def test_wrong_sizes_and_changed_files_are_refused_by_name(tmp_path):
    with pytest.raises(ShapeMismatchError, match=r"'pos_embed' in '.*vit_tiny\.safetensors': shape \(1, 17, 64\), "
                                                 r"expected \(1, 5, 64\) for \(ViT\)\.pos_embed"):
        ViT.from_pretrained(FILE, **dict(SIZES, patch_size=16))
    with pytest.raises(ValueError, match=r"missing from .*'blocks\.2\.norm1\.weight'"):
        ViT.from_pretrained(FILE, **dict(SIZES, depth=3))
    with pytest.raises(ShapeMismatchError, match=r"'head\.weight' .* shape \(10, 64\) \(\(64, 10\) after its "
                                                 r"transform\), expected \(64, 1000\) for \(ViT\)\.head\(Linear\)\.w"):
        ViT.from_pretrained(FILE, **dict(SIZES, num_classes=1000))
    tensors = safetensors.numpy.load_file(str(FILE))
    tensors['blocks.0.ls1.gamma'] = np.ones(64, np.float32)  # LayerScale, which this ViT does not have
    safetensors.numpy.save_file(tensors, str(tmp_path / 'vit.safetensors'))
    with pytest.raises(ValueError, match=r"unexpected .*'blocks\.0\.ls1\.gamma' \(64,\)"):
        ViT.from_pretrained(tmp_path / 'vit.safetensors', **SIZES)


def test_loading_onto_a_mesh_keeps_the_logits():
    mesh = objax.sharding.make_mesh('data=2,model=4')
    rules = [('*.attn(MultiHeadAttention).*(Linear).w', P(None, 'model')), ('*.fc1(Linear).w', P(None, 'model')),
             ('*.fc2(Linear).w', P('model', None))]
    model = ViT.from_pretrained(FILE, **SIZES, mesh=mesh, rules=rules)
    attn = model.blocks[1].attn
    assert attn.value.w.value.sharding.is_equivalent_to(NamedSharding(mesh, P(None, 'model')), 2)
    assert model.blocks[0].fc2.w.value.sharding.is_equivalent_to(NamedSharding(mesh, P('model', None)), 2)
    assert model.head.w.value.sharding.is_equivalent_to(NamedSharding(mesh, P()), 2)
    jitted = objax.Jit(lambda x: model(x), model.vars())
    assert relative_error(jitted(REF['images']), REF['logits']) < 1e-4
