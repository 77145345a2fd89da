"""A custom model of the kinds the litert-torch route must follow (conv+BN+ReLU6, depthwise,
residual, pooling, linear): no Keras twin could follow it."""

import torch
from torch import nn


def conv_bn(cin, cout, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))


class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = conv_bn(channels, channels)
        self.conv2 = conv_bn(channels, channels, act=False)

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class TinyNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2)
        self.dw = conv_bn(16, 16, stride=2, groups=16)
        self.block = Residual(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pool(self.block(self.dw(self.stem(x))))
        return self.head(torch.flatten(x, 1))


def build(weights=None, num_classes=5):
    return TinyNet(num_classes)
