"""Model zoo: ready-made architectures built from objax.nn layers (ConvNet, DNNet, ResNetV2, WideResNet, VGG19, RNN)."""

from objax.zoo import convnet, dnnet, resnet_v2, rnn, vgg, wide_resnet

__all__ = ['convnet', 'dnnet', 'resnet_v2', 'rnn', 'vgg', 'wide_resnet']
