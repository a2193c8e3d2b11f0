"""Model zoo: ready-made architectures built from objax.nn layers (ConvNet, DNNet, ResNetV2, WideResNet, VGG19, RNN,
GPT-2, ViT and the Llama family with published weights)."""

from objax.zoo import convnet, dnnet, gpt2, llama, resnet_v2, rnn, vgg, vit, wide_resnet

__all__ = ['convnet', 'dnnet', 'gpt2', 'llama', 'resnet_v2', 'rnn', 'vgg', 'vit', 'wide_resnet']
