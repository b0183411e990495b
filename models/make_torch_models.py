#!/usr/bin/env python
"""Export reference CNNs from hand-written PyTorch definitions to ONNX.

Needs the ``torch`` extra (torch, onnxscript for ``--exporter dynamo``).
Nothing is downloaded: the architectures are written out here (torchvision
layouts, re-typed) and the weights are random with a fixed seed.

Weights: convolutions use torchvision's Kaiming init; BatchNorm affine
parameters are randomised and its running statistics are calibrated on a few
random batches (so BN folding is not a no-op and activations stay O(1)).
The model is then put in eval mode and exported.

Examples::

    # the committed CIFAR ResNet-20 (TorchScript exporter, opset 17, dynamic batch)
    python models/make_torch_models.py resnet20_cifar --exporter torchscript \
        --opset 17 --dynamic batch --ref -o models/resnet20_cifar.onnx
    # the big reference models (not committed)
    python models/make_torch_models.py big --out-dir models/big

Run ``python models/make_torch_models.py --help`` for all options.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: N812

# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


# --------------------------------------------------------------------------
# ResNet (torchvision layout, v1.5: stride on the 3x3 conv of Bottleneck)
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(*conv_bn(self.inplanes, planes * block.expansion, 1, stride))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, sec. 4.2): 3 stages 16/32/64, 6n+2 layers
# --------------------------------------------------------------------------


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; n=3 is ResNet-20. Projection (1x1 conv+BN)
    shortcuts where the shape changes (option B)."""

    def __init__(self, n: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, width, 3), nn.ReLU())
        stages, cin = [], width
        for i, w in enumerate((width, width * 2, width * 4)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or cin != w:
                    down = nn.Sequential(*conv_bn(cin, w, 1, stride))
                stages.append(BasicBlock(cin, w, stride, down))
                cin = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------
# "Table-1 network" of the SK papers
# --------------------------------------------------------------------------


class Table1Block(nn.Module):
    """Residual block of ``n_convs`` 3x3 convs, BN after each conv, ReLU between
    convs, and ReLU after the residual sum. The shortcut is the identity when
    shapes match; otherwise a 1x1 stride-s conv + BN (``shortcut='project'``) or
    a strided identity zero-padded in channels (``shortcut='pad'``, option A)."""

    def __init__(self, cin: int, cout: int, stride: int, n_convs: int, shortcut: str):
        super().__init__()
        body: list[nn.Module] = []
        for i in range(n_convs):
            body += conv_bn(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1)
            if i < n_convs - 1:
                body.append(nn.ReLU())
        self.body = nn.Sequential(*body)
        self.stride, self.pad = stride, cout - cin
        self.shortcut: nn.Module | None = None
        if (stride != 1 or cin != cout) and shortcut == "project":
            self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x):
        if self.shortcut is not None:
            identity = self.shortcut(x)
        elif self.stride != 1 or self.pad:
            identity = x[:, :, :: self.stride, :: self.stride]
            identity = F.pad(identity, (0, 0, 0, 0, 0, self.pad))
        else:
            identity = x
        return F.relu(self.body(x) + identity)


class Table1Net(nn.Module):
    """stem conv 3x3/2 -> maxpool 3x3/2 -> 4 stages of ``blocks`` blocks (stages
    2-4 start with a stride-2 block that doubles the width) -> GAP -> fc."""

    def __init__(
        self,
        blocks: int = 2,
        width: int = 64,
        n_convs: int = 2,
        num_classes: int = 1000,
        shortcut: str = "project",
    ):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, width, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], width
        for s in range(4):
            cout = width * 2**s
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                layers.append(Table1Block(cin, cout, stride, n_convs, shortcut))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# --------------------------------------------------------------------------
# VGG-16 (torchvision "D", no BN), AlexNet (torchvision variant)
# --------------------------------------------------------------------------


class VGG16(nn.Module):
    CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------
# MobileNetV2 (torchvision layout, width 1.0)
# --------------------------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += conv_bn(hidden, cout, 1)
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [*conv_bn(3, cin, 3, 2), nn.ReLU6()]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers += [*conv_bn(cin, last, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------
# tiny CNN (source of the const-weights and float16 test models)
# --------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """3x3 conv -> 3x3/2 conv -> depthwise 3x3 -> 1x1 conv (all +BN+ReLU) -> GAP -> fc."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_bn(3, w, 3),
            nn.ReLU(),
            *conv_bn(w, 2 * w, 3, 2),
            nn.ReLU(),
            *conv_bn(2 * w, 2 * w, 3, groups=2 * w),
            nn.ReLU(),
            *conv_bn(2 * w, 4 * w, 1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------
# YOLOv8-style detector (CSP backbone with C2f blocks, SPPF, PAN neck, decoupled head)
# --------------------------------------------------------------------------


class CBS(nn.Module):
    """Conv + BN + SiLU (ONNX: Conv, then Sigmoid and Mul once BN is folded)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1):
        super().__init__()
        self.conv, self.bn = conv_bn(cin, cout, k, stride)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2 = CBS(c, c, 3), CBS(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """1x1 conv, split in two (ONNX Split), n bottlenecks on the second half, every
    intermediate concatenated, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = CBS(cin, 2 * self.c, 1)
        self.cv2 = CBS((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 5):
        super().__init__()
        self.cv1 = CBS(cin, cin // 2, 1)
        self.cv2 = CBS(cin // 2 * 4, cout, 1)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class YoloDetector(nn.Module):
    """YOLOv8-style, width ``w`` (YOLOv8n: 16, s: 32): backbone strides 2-32 with C2f blocks
    and SPPF, an upsample/concat PAN neck, and a decoupled head per scale (box: 4x16 DFL bins,
    class scores); output [N, 64 + classes, anchors] (raw, no decoding or NMS)."""

    def __init__(self, num_classes: int = 80, w: int = 16):
        super().__init__()
        self.stem = nn.Sequential(CBS(3, w, 3, 2), CBS(w, 2 * w, 3, 2), C2f(2 * w, 2 * w, 1))
        self.p3 = nn.Sequential(CBS(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 2))
        self.p4 = nn.Sequential(CBS(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 2))
        self.p5 = nn.Sequential(
            CBS(8 * w, 16 * w, 3, 2), C2f(16 * w, 16 * w, 1), SPPF(16 * w, 16 * w)
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C2f(24 * w, 8 * w, 1, False)
        self.n3 = C2f(12 * w, 4 * w, 1, False)
        self.d3 = CBS(4 * w, 4 * w, 3, 2)
        self.n4b = C2f(12 * w, 8 * w, 1, False)
        self.d4 = CBS(8 * w, 8 * w, 3, 2)
        self.n5 = C2f(24 * w, 16 * w, 1, False)
        cb, cc = max(16, 4 * w // 4, 64), max(4 * w, min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(CBS(c, cb, 3), CBS(cb, cb, 3), nn.Conv2d(cb, 64, 1))
            for c in (4 * w, 8 * w, 16 * w)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(CBS(c, cc, 3), CBS(cc, cc, 3), nn.Conv2d(cc, num_classes, 1))
            for c in (4 * w, 8 * w, 16 * w)
        )

    def forward(self, x):
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        o3 = self.n3(torch.cat([self.up(n4), p3], 1))
        o4 = self.n4b(torch.cat([self.d3(o3), n4], 1))
        o5 = self.n5(torch.cat([self.d4(o4), p5], 1))
        outs = []
        for f, box, cls in zip((o3, o4, o5), self.box, self.cls, strict=True):
            y = torch.cat([box(f), cls(f)], 1)
            outs.append(y.flatten(2))
        return torch.cat(outs, 2)


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------


@dataclass
class Spec:
    build: Callable[[argparse.Namespace], nn.Module]
    input_size: int
    about: str


def _w(a, default):
    return a.width if a.width is not None else default


def _nc(a, default=1000):
    return a.num_classes if a.num_classes is not None else default


MODELS: dict[str, Spec] = {
    "resnet18": Spec(
        lambda a: ResNet(BasicBlock, [2, 2, 2, 2], _nc(a), _w(a, 64)), 224, "ResNet-18"
    ),
    "resnet34": Spec(
        lambda a: ResNet(BasicBlock, [3, 4, 6, 3], _nc(a), _w(a, 64)), 224, "ResNet-34"
    ),
    "resnet50": Spec(
        lambda a: ResNet(Bottleneck, [3, 4, 6, 3], _nc(a), _w(a, 64)), 224, "ResNet-50 v1.5"
    ),
    "vgg16": Spec(lambda a: VGG16(_nc(a)), 224, "VGG-16 (no BN)"),
    "alexnet": Spec(lambda a: AlexNet(_nc(a)), 224, "AlexNet (torchvision variant)"),
    "mobilenet_v2": Spec(lambda a: MobileNetV2(_nc(a)), 224, "MobileNetV2 width 1.0"),
    "yolo_s": Spec(
        lambda a: YoloDetector(_nc(a, 80), _w(a, 32)), 320, "YOLOv8s-style detector (raw head)"
    ),
    "resnet20_cifar": Spec(
        lambda a: CifarResNet(a.blocks or 3, _nc(a, 10), _w(a, 16)),
        32,
        "CIFAR ResNet-(6B+2), widths w/2w/4w (default B=3 -> ResNet-20, w=16)",
    ),
    "tiny_cnn": Spec(
        lambda a: TinyCNN(_nc(a, 10), _w(a, 8)), 32, "tiny CNN (incl. depthwise conv)"
    ),
    "table1": Spec(
        lambda a: Table1Net(a.blocks or 2, _w(a, 64), a.convs_per_block, _nc(a), a.shortcut),
        224,
        "Table-1 network",
    ),
}
BIG = ["resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "mobilenet_v2", "yolo_s"]


def init_weights(model: nn.Module, seed: int, input_size: int, calib_batches: int = 2) -> nn.Module:
    """Deterministic random weights; BN stats calibrated on random data."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.01)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            m.momentum = None  # cumulative average over the calibration batches
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)  # O(1) logits
            nn.init.normal_(m.bias, 0.0, 0.1)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model.train()
        with torch.no_grad():
            for _ in range(calib_batches):
                model(torch.randn(4, 3, input_size, input_size))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1  # back to the default (exported as momentum=0.9)
    return model.eval()


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

DYN_AXES = {"none": [], "batch": [0], "all": [0, 2, 3]}
AXIS_NAMES = {0: "batch", 2: "height", 3: "width"}


def export(
    model: nn.Module,
    x: torch.Tensor,
    path: str,
    exporter: str,
    opset: int,
    dynamic: str,
    keep_bn: bool,
) -> None:
    axes = DYN_AXES[dynamic]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            kw = {}
            if keep_bn:
                # EVAL mode folds BN into the conv (eval peephole); PRESERVE with
                # a model in eval mode keeps BatchNormalization (training_mode=0).
                kw = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
            torch.onnx.export(
                model,
                (x,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={
                    "input": {a: AXIS_NAMES[a] for a in axes},
                    "logits": {0: "batch"} if 0 in axes else {},
                }
                if axes
                else None,
                **kw,
            )
        else:
            if keep_bn:
                raise ValueError("keep_bn is only supported with the torchscript exporter")
            dims = {
                a: torch.export.Dim(AXIS_NAMES[a], min=1 if a == 0 else 16, max=4096) for a in axes
            }
            prog = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({**dims},) if dims else None,
                optimize=True,
                external_data=False,
            )
            prog.save(path, external_data=False)


def save_external(path: str, data_name: str | None = None) -> None:
    """Re-save ``path`` with all tensors >= 1 KiB in one external data file."""
    import onnx

    model = onnx.load(path)
    data_name = data_name or os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(path), data_name)
    if os.path.exists(data_path):
        os.remove(data_path)
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models: " + ", ".join(MODELS) + "; 'big' = " + ", ".join(BIG),
    )
    p.add_argument("models", nargs="+", help="model name(s), or 'big'")
    p.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    p.add_argument(
        "--opset", type=int, default=None, help="default: the exporter's (20 in torch 2.13)"
    )
    p.add_argument(
        "--dynamic",
        nargs="?",
        const="all",
        default="none",
        choices=list(DYN_AXES),
        help="dynamic axes: none (default), batch, or all = batch/height/width "
        "(bare --dynamic means all)",
    )
    p.add_argument(
        "--external-data",
        action="store_true",
        help="write <name>/model.onnx + model.onnx.data (tensors >= 1 KiB outside)",
    )
    p.add_argument(
        "--keep-bn",
        action="store_true",
        help="keep BatchNormalization nodes unfused (torchscript exporter only)",
    )
    p.add_argument("--out-dir", default=".", help="output directory (default: .)")
    p.add_argument("-o", "--output", help="output path (only with a single model)")
    p.add_argument("--name", help="output base name (default: the model name)")
    p.add_argument("--width", type=int, help="base width (ResNets, table1, resnet20_cifar)")
    p.add_argument("--blocks", type=int, help="blocks per stage B (table1: 2, resnet20_cifar: 3)")
    p.add_argument("--convs-per-block", type=int, default=2, help="table1: 3x3 convs per block")
    p.add_argument(
        "--shortcut",
        choices=["project", "pad"],
        default="project",
        help="table1: shortcut of the downsampling blocks",
    )
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-size", type=int, help="H=W of the example input")
    p.add_argument("--batch", type=int, default=1, help="batch of the example input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ref",
        action="store_true",
        help="also save <output>.ref.npz with a random input and the torch output "
        "(under models/ref/ when the output is in models/)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    a = p.parse_args(argv)

    names = [n for m in a.models for n in (BIG if m == "big" else [m])]
    for n in names:
        if n not in MODELS:
            p.error(f"unknown model {n!r}; choose from {', '.join(MODELS)} or 'big'")
    if a.output and len(names) > 1:
        p.error("--output needs a single model")
    if a.keep_bn and a.exporter != "torchscript":
        p.error("--keep-bn needs --exporter torchscript")

    for n in names:
        spec = MODELS[n]
        size = a.input_size or spec.input_size
        model = init_weights(spec.build(a), a.seed, size)
        torch.manual_seed(a.seed + 1)
        x = torch.randn(a.batch, 3, size, size)
        base = a.name or n
        if a.output:
            path = a.output
        elif a.external_data:
            path = os.path.join(a.out_dir, base, "model.onnx")
        else:
            path = os.path.join(a.out_dir, base + ".onnx")
        export(model, x, path, a.exporter, a.opset or 20, a.dynamic, a.keep_bn)
        if a.external_data:
            save_external(path)
        with torch.no_grad():
            y = model(x).numpy()
        msg = f"{n}: wrote {path} ({a.exporter}, opset {a.opset or 20}, dynamic={a.dynamic})"
        if a.ref:
            import numpy as np

            ref = ref_path(path)
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            np.savez_compressed(ref, input=x.numpy(), output=y)
            msg += f", ref {ref}"
        if not a.no_check:
            import numpy as np
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
            err = float(np.max(np.abs(got - y)))
            scale = max(1.0, float(np.max(np.abs(y))))  # float32 error grows with the output
            msg += f", max|ort-torch|={err:.2e} (max|y| {scale:.3g})"
            if not np.allclose(got, y, atol=1e-4 * scale, rtol=1e-4):
                print(msg, file=sys.stderr)
                raise SystemExit(f"{n}: onnxruntime output differs from torch (max err {err})")
        print(msg)
    return 0


def ref_path(onnx_path: str) -> str:
    """models/foo.onnx -> models/ref/foo.npz; models/foo/model.onnx -> models/ref/foo.npz;
    elsewhere: <path>.ref.npz."""
    d, f = os.path.split(os.path.abspath(onnx_path))
    here = os.path.dirname(os.path.abspath(__file__))
    if f == "model.onnx":
        d, f = os.path.split(d)
    stem = f[:-5] if f.endswith(".onnx") else f
    if d == here:
        return os.path.join(here, "ref", stem + ".npz")
    return os.path.abspath(onnx_path) + ".ref.npz"


if __name__ == "__main__":
    sys.exit(main())
