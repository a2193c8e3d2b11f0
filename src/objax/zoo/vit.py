"""Vision Transformer (Dosovitskiy et al., 2020) as timm's VisionTransformer, with timm's weights."""

import functools
from typing import Dict, Optional

import jax.numpy as jn
import numpy as np
from jax.sharding import Mesh

from objax.constants import ConvPadding
from objax.io.pretrained import load_tensors, read_tensors
from objax.module import Module, ModuleList
from objax.nn import Conv2D, LayerNorm, Linear
from objax.nn.init import truncated_normal
from objax.typing import JaxArray
from objax.variable import TrainVar
from objax.zoo._transformer import PreNormBlock, split_columns

__all__ = ['ViT']

_EPS = 1e-6  # timm's LayerNorm epsilon


def _torch_linear(a: np.ndarray) -> np.ndarray:
    """A PyTorch Linear weight (out, in) in objax's layout (in, out)."""
    return a.T


def _torch_conv(a: np.ndarray) -> np.ndarray:
    """A PyTorch Conv2d weight (out, in, kh, kw) in objax's layout (kh, kw, in, out)."""
    return a.transpose(2, 3, 1, 0)


def _conv_bias(a: np.ndarray) -> np.ndarray:
    """A PyTorch Conv2d bias (out,) in objax's layout (out, 1, 1)."""
    return a.reshape(-1, 1, 1)


def _qkv(n: int, i: int):
    """Part i (query, key, value) of timm's fused qkv weight (3n, n), in objax's layout (n, n)."""
    part = split_columns(n, i)
    return lambda a: part(a.T)


class ViT(Module):
    """Vision Transformer: the image cut into patch_size x patch_size patches, each projected to embed_dim
    (a strided Conv2D), a class token and learned position embeddings, `depth` pre-norm blocks of self attention
    and an exact-gelu MLP, a final LayerNorm (eps 1e-6) and a Linear head on the class token, as timm's
    VisionTransformer with its defaults (global_pool='token', class_token=True).

    Example:
        ```
        model = objax.zoo.vit.ViT.from_pretrained('vit_base_patch16_224/model.safetensors')
        logits = model(images)  # images (N, 3, 224, 224), normalised as the checkpoint expects -> (N, 1000)
        ```
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, num_classes: int = 1000):
        """Creates a randomly initialised ViT.

        Args:
            img_size: height and width of the input images.
            patch_size: height and width of each patch; divides img_size.
            in_chans: channels of the input images.
            embed_dim: width of the model; a multiple of `num_heads`.
            depth: number of blocks.
            num_heads: number of attention heads.
            mlp_ratio: width of each MLP's hidden layer over embed_dim.
            num_classes: number of logits.

        Raises:
            ValueError: a size that is not a positive integer, img_size not a multiple of patch_size, or
                embed_dim not a multiple of num_heads.
        """
        for name, value in (('img_size', img_size), ('patch_size', patch_size), ('in_chans', in_chans),
                            ('embed_dim', embed_dim), ('depth', depth), ('num_heads', num_heads),
                            ('num_classes', num_classes)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f'ViT: {name} must be a positive integer, got {value!r}')
        if img_size % patch_size:
            raise ValueError(f'ViT: img_size ({img_size}) must be a multiple of patch_size ({patch_size})')
        if embed_dim % num_heads:
            raise ValueError(f'ViT: embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})')
        hidden = int(embed_dim * mlp_ratio)
        self.img_size, self.in_chans, self.embed_dim = int(img_size), int(in_chans), int(embed_dim)
        init = functools.partial(truncated_normal, stddev=0.02)
        self.patch_embed = Conv2D(in_chans, embed_dim, patch_size, strides=patch_size, padding=ConvPadding.VALID)
        self.cls_token = TrainVar(init((1, 1, embed_dim)))
        self.pos_embed = TrainVar(init((1, (img_size // patch_size) ** 2 + 1, embed_dim)))
        self.blocks = ModuleList(PreNormBlock(embed_dim, num_heads, hidden, _EPS, causal=False, approximate=False,
                                              keep=1.0) for _ in range(depth))
        self.norm = LayerNorm(embed_dim, eps=_EPS)
        self.head = Linear(embed_dim, num_classes)

    def __call__(self, x: JaxArray, training: bool = False) -> JaxArray:
        """The class logits of a batch of images.

        Args:
            x: images (N, in_chans, img_size, img_size) (NCHW).
            training: unused (the model has no dropout); kept for the zoo's calling convention.

        Returns:
            The logits, (N, num_classes).

        Raises:
            ValueError: `x` is not of shape (N, in_chans, img_size, img_size).
        """
        shape = tuple(jn.shape(x))
        if len(shape) != 4 or shape[1:] != (self.in_chans, self.img_size, self.img_size):
            raise ValueError(f'ViT: expected images of shape (N, {self.in_chans}, {self.img_size}, '
                             f'{self.img_size}), got {shape}')
        y = self.patch_embed(x)  # (N, D, h, w)
        y = y.reshape(shape[0], self.embed_dim, -1).transpose(0, 2, 1)  # (N, h * w, D), patches in row order
        cls = jn.broadcast_to(self.cls_token.value, (shape[0], 1, self.embed_dim)).astype(y.dtype)
        y = jn.concatenate([cls, y], axis=1) + self.pos_embed.value
        for block in self.blocks:
            y, _ = block(y, training)
        return self.head(self.norm(y)[:, 0])

    @classmethod
    def from_pretrained(cls, path: str, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768,
                        depth: int = 12, num_heads: int = 12, num_classes: int = 1000, mesh: Optional[Mesh] = None,
                        rules=None, in_chans: int = 3, mlp_ratio: float = 4.0) -> 'ViT':
        """Loads the state dict of a timm VisionTransformer saved as safetensors (timm's `model.safetensors` on
        the Hugging Face Hub, or `safetensors.torch.save_file(model.state_dict(), path)`).

        PyTorch layouts are converted: Linear weights transposed, the patch Conv2d weight to (kh, kw, in, out), the
        fused qkv weight split into the query, key and value layers.

        Args:
            path: the safetensors file, or a folder holding model.safetensors (or an index and its shards).
            img_size: height and width of the input images.
            patch_size: height and width of each patch.
            embed_dim: width of the model.
            depth: number of blocks.
            num_heads: number of attention heads.
            num_classes: number of logits.
            mesh: if given, each variable goes straight from host memory onto this mesh (see
                objax.io.load_tensors), laid out by `rules`; replicated without them.
            rules: objax.sharding rules over the model's variable names.
            in_chans: channels of the input images.
            mlp_ratio: width of each MLP's hidden layer over embed_dim.

        Returns:
            The model, in float32.

        Raises:
            FileNotFoundError: `path` does not exist or holds no safetensors weights.
            ValueError: missing, unexpected or wrong-shaped tensors (named, with their shapes and file), e.g. when
                a size argument does not match the checkpoint; nothing is loaded then.
        """
        model = cls(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
                    num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes)
        load_tensors(model._targets(), read_tensors(path), mesh=mesh, rules=rules, vc=model.vars())
        return model

    def _targets(self) -> Dict[str, object]:
        """timm tensor name -> variable (with the transform from PyTorch's layout)."""
        n = self.embed_dim
        out = {'cls_token': self.cls_token, 'pos_embed': self.pos_embed,
               'patch_embed.proj.weight': (self.patch_embed.w, _torch_conv),
               'patch_embed.proj.bias': (self.patch_embed.b, _conv_bias),
               'norm.weight': self.norm.gamma, 'norm.bias': self.norm.beta,
               'head.weight': (self.head.w, _torch_linear), 'head.bias': self.head.b}
        for i, block in enumerate(self.blocks):
            b, attn = f'blocks.{i}.', block.attn
            qkv = (attn.query, attn.key, attn.value)
            out.update({
                b + 'norm1.weight': block.norm1.gamma, b + 'norm1.bias': block.norm1.beta,
                b + 'attn.qkv.weight': [(lin.w, _qkv(n, j)) for j, lin in enumerate(qkv)],
                b + 'attn.qkv.bias': [(lin.b, split_columns(n, j)) for j, lin in enumerate(qkv)],
                b + 'attn.proj.weight': (attn.out.w, _torch_linear), b + 'attn.proj.bias': attn.out.b,
                b + 'norm2.weight': block.norm2.gamma, b + 'norm2.bias': block.norm2.beta,
                b + 'mlp.fc1.weight': (block.fc1.w, _torch_linear), b + 'mlp.fc1.bias': block.fc1.b,
                b + 'mlp.fc2.weight': (block.fc2.w, _torch_linear), b + 'mlp.fc2.bias': block.fc2.b})
        return out
