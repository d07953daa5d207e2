"""ResNet-shaped torch models with seeded weights and BatchNorm statistics, exported to ONNX.

Written here, no torchvision: a 7x7/2 conv + BN + ReLU + 3x3/2 max-pool stem, stages of residual
blocks (the first block of a stage downsamples with stride 2 and takes a 1x1 conv + BN projection
shortcut), global average pooling, one fully connected layer to the logits.

* ``resnet50``: bottleneck blocks (1x1 → 3x3 → 1x1, expansion 4), stages 3-4-6-3, 3x224x224,
  1000 classes, 25.6M parameters (~100 MB as ONNX; not committed).
* ``resnet18``: basic blocks (3x3 → 3x3), stages 2-2-2-2, 11.7M parameters.
* ``tiny_resnet``: a 3x3 stem, basic blocks 1-1-1 of widths 8-16-32 on 3x32x32, 10 classes: fast tests.

Weights: He-normal convs, a seeded fc. BatchNorm is made non-trivial and realistic: γ ~ U(0.5, 1.5)
(U(0.1, 0.5) for the last BN of each residual branch, small as in trained ResNets), β ~ N(0, 0.1²),
then the running mean and variance are *measured* (one train-mode pass over a seeded N(0, 1) batch
with cumulative averaging), so activations stay O(1) through 50 layers and no statistic is the
default (0, 1). With γ ~ U(0.5, 1.5) everywhere the random ResNet-50 is so sensitive that float32
torch and float64 differ by ~1e-4 in the logits; with the small branch γ, by ~3e-6.

``save`` exports with the TorchScript exporter (``dynamo=False``), opset 17, input ``input``
[batch,3,H,W], output ``logits`` [batch,classes]. By default BatchNormalization nodes stay in the
graph (TrainingMode.PRESERVE on an eval-mode model); ``fuse_bn=True`` lets the exporter fold them
into the convs, as a plain eval-mode export does.

    python models/resnet.py tiny -o tiny_resnet.onnx [--seed N] [--fuse-bn]
    python models/resnet.py resnet50 -o resnet50.onnx
"""

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class Basic(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU."""

    expansion = 1
    branch_end = "bn2"  # the residual branch's last BN

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(cin, width, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand to 4·width, plus the shortcut, then ReLU."""

    expansion = 4
    branch_end = "bn3"

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


def _shortcut(cin, cout, stride):
    """Identity when shapes agree, else a strided 1x1 conv + BN projection."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, layers, widths, classes, in_shape, stem="imagenet"):
        super().__init__()
        self.in_shape = tuple(in_shape)
        channels = in_shape[0]
        if stem == "imagenet":  # 7x7/2 conv, 3x3/2 max pool: /4
            conv = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
            pool = nn.MaxPool2d(3, 2, 1)
        else:  # small inputs: 3x3/1 conv, 2x2/2 max pool: /2
            conv = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            pool = nn.MaxPool2d(2, 2)
        self.stem = nn.Sequential(conv, nn.BatchNorm2d(widths[0]), nn.ReLU(), pool)
        blocks, cin = [], widths[0]
        for stage, (count, width) in enumerate(zip(layers, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(cin, width, stride))
                cin = width * block.expansion
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)  # exported as GlobalAveragePool
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        y = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(y, 1))


def seed_weights(model, seed, calib_batch=4):
    """He-normal convs, seeded fc, BN affine params, then BN running stats measured on N(0,1) data."""
    gen = torch.Generator().manual_seed(seed)
    branch_ends = {id(getattr(m, m.branch_end)) for m in model.modules() if hasattr(m, "branch_end")}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                low, high = (0.1, 0.5) if id(m) in branch_ends else (0.5, 1.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * (high - low) + low)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one pass, exactly that batch's stats
        model.train()
        model(torch.randn((calib_batch, *model.in_shape), generator=gen))
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def resnet50(seed=0, classes=1000):
    """ResNet-50: bottleneck stages 3-4-6-3 of widths 64-128-256-512 (outputs 256..2048), 3x224x224."""
    model = ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), classes, (3, 224, 224))
    return seed_weights(model, seed, calib_batch=2)


def resnet18(seed=0, classes=1000):
    """ResNet-18: basic stages 2-2-2-2 of widths 64-128-256-512, 3x224x224."""
    model = ResNet(Basic, (2, 2, 2, 2), (64, 128, 256, 512), classes, (3, 224, 224))
    return seed_weights(model, seed, calib_batch=2)


def tiny_resnet(seed=0, classes=10):
    """Three basic blocks (8-16-32 wide, two downsampling with projections) on 3x32x32."""
    model = ResNet(Basic, (1, 1, 1), (8, 16, 32), classes, (3, 32, 32), stem="small")
    return seed_weights(model, seed, calib_batch=8)


def save(model, path, dynamic_batch=True, fuse_bn=False):
    """Export ``model`` (eval mode) to ``path``: opset 17, ``input`` → ``logits``."""
    model.eval()
    mode = torch.onnx.TrainingMode.EVAL if fuse_bn else torch.onnx.TrainingMode.PRESERVE
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # dynamo=False is legacy; PRESERVE + folding is fine in eval
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", ".*constant folding be turned off", UserWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, *model.in_shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            training=mode,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


BUILDERS = {"tiny": tiny_resnet, "resnet18": resnet18, "resnet50": resnet50}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=sorted(BUILDERS))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fuse-bn", action="store_true", help="let the exporter fold BN into the convs")
    ap.add_argument("--static-batch", action="store_true", help="batch fixed at 1")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = BUILDERS[args.arch](seed=args.seed)
    save(model, args.output, dynamic_batch=not args.static_batch, fuse_bn=args.fuse_bn)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: {args.arch}, {params:,} parameters")


if __name__ == "__main__":
    main()
