"""Small hand-written replicas of the published module trees of torchvision's
resnet101 / deeplabv3_resnet101 and timm's xception65 / mobilenetv2_100.

They reproduce each source's state-dict key names and shapes (written from the
published architectures: torchvision/models/resnet.py and segmentation/deeplabv3.py,
timm/models/xception_aligned.py and efficientnet.py's mobilenetv2 arch def) and
enough of its forward pass to check imported weights numerically.  They are test
fixtures, not models of ours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- torchvision ResNet-101

class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet101(nn.Module):
    """torchvision.models.resnet101(replace_stride_with_dilation=...) naming and dilation rule."""

    def __init__(self, replace_stride_with_dilation=(False, False, False), fc=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes, self.dilation = 64, 1
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(256, 23, 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(512, 3, 2, replace_stride_with_dilation[2])
        if fc:
            self.fc = nn.Linear(2048, 1000)

    def _make_layer(self, planes, blocks, stride=1, dilate=False):
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, previous, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _conv_bn_relu(cin, cout, k=1, dilation=1):
    return [nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x):
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin, rates, cout=256):
        super().__init__()
        self.convs = nn.ModuleList([nn.Sequential(*_conv_bn_relu(cin, cout))]
                                   + [nn.Sequential(*_conv_bn_relu(cin, cout, 3, r)) for r in rates]
                                   + [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(*_conv_bn_relu(5 * cout, cout), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([c(x) for c in self.convs], 1))


class DeepLabV3ResNet101(nn.Module):
    """torchvision.models.segmentation.deeplabv3_resnet101(num_classes=21, aux_loss=True)."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.backbone = ResNet101((False, True, True), fc=False)
        self.classifier = nn.Sequential(ASPP(2048, (12, 24, 36)), *_conv_bn_relu(256, 256, 3),
                                        nn.Conv2d(256, num_classes, 1))
        self.aux_classifier = nn.Sequential(*_conv_bn_relu(1024, 256, 3), nn.Dropout(0.1),
                                            nn.Conv2d(256, num_classes, 1))

    def logits(self, x):
        return self.classifier(self.backbone.features(x))


# ---------------------------------------------------------------- timm xception65 (aligned)

class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, k, stride=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class SeparableConv2d(nn.Module):
    def __init__(self, cin, cout, stride=1, dilation=1, act=False):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin, eps=1e-3)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = act

    def forward(self, x):
        x = self.bn_dw(self.conv_dw(x))
        x = F.relu(x) if self.act else x
        x = self.bn_pw(self.conv_pw(x))
        return F.relu(x) if self.act else x


class XceptionModule(nn.Module):
    def __init__(self, cin, outs, stride=1, dilation=1, start_with_relu=True, no_skip=False):
        super().__init__()
        outs = outs if isinstance(outs, tuple) else (outs,) * 3
        self.start_with_relu, self.no_skip = start_with_relu, no_skip
        self.shortcut = (ConvNormAct(cin, outs[-1], 1, stride, act=False)
                         if not no_skip and (outs[-1] != cin or stride != 1) else None)
        self.stack = nn.Sequential()
        for i in range(3):
            self.stack.add_module(f"conv{i + 1}", SeparableConv2d(cin, outs[i], stride if i == 2 else 1, dilation,
                                                                  act=not start_with_relu))
            cin = outs[i]

    def forward(self, x):
        y = x
        for conv in self.stack:
            y = conv(F.relu(y) if self.start_with_relu else y)
        if self.no_skip:
            return y
        return y + (x if self.shortcut is None else self.shortcut(x))


class Xception65(nn.Module):
    """timm.create_model('xception65', output_stride=...) naming and dilation rule."""

    def __init__(self, output_stride=32):
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 32, 3, 2), ConvNormAct(32, 64, 3))
        cfg = ([(64, 128, 2), (128, 256, 2), (256, 728, 2)] + [(728, 728, 1)] * 16
               + [(728, (728, 1024, 1024), 2), (1024, (1536, 1536, 2048), 1)])
        self.blocks = nn.Sequential()
        stride, dilation = 2, 1
        for i, (cin, cout, s) in enumerate(cfg):
            d = dilation
            if s > 1 and stride * s > output_stride:
                dilation *= s
                s = 1
            elif s > 1:
                stride *= s
            last = i == len(cfg) - 1
            self.blocks.add_module(str(i), XceptionModule(cin, cout, s, d, start_with_relu=not last, no_skip=last))
        self.head = nn.Module()
        self.head.fc = nn.Linear(2048, 1000)

    def features(self, x):
        return self.blocks(self.stem(x))


# ---------------------------------------------------------------- timm mobilenetv2_100

class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        mid = cin * 6
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, dilation, dilation, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


class MobileNetV2(nn.Module):
    """timm.create_model('mobilenetv2_100', output_stride=...) naming and dilation rule."""

    def __init__(self, output_stride=32):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        stages = [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]
        self.blocks = nn.Sequential()
        cin, stride, dilation = 32, 2, 1
        for si, (cout, n, s) in enumerate(stages):
            stage = nn.Sequential()
            for b in range(n):
                bs, d = (s if b == 0 else 1), dilation
                if bs > 1 and stride * bs > output_stride:
                    dilation *= bs
                    bs = 1
                elif bs > 1:
                    stride *= bs
                stage.add_module(str(b), DepthwiseSeparable(cin, cout) if si == 0 else
                                 InvertedResidual(cin, cout, bs, d if b == 0 else dilation))
                cin = cout
            self.blocks.add_module(str(si), stage)
        self.conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.classifier = nn.Linear(1280, 1000)

    def features(self, x):
        return self.blocks(F.relu6(self.bn1(self.conv_stem(x))))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms (fresh ones are identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model
