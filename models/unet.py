"""A small U-Net (encoder–decoder with skip connections) in torch with seeded weights, exported to ONNX.

Three levels on 3x32x32 (any H, W divisible by 4), a per-pixel map of ``classes`` logits out:

    enc1: [conv3x3-ReLU]x2, 8 ch   ───────────────────────── Concat ─► dec1: [conv3x3-ReLU]x2, 8 ch ─► conv1x1 ─► logits
      │ MaxPool 2                                              ▲ nearest Upsample x2 (Resize) + conv1x1 16→8
    enc2: [conv3x3-ReLU]x2, 16 ch ────────── Concat ─► dec2: [conv3x3-ReLU]x2, 16 ch
      │ MaxPool 2                             ▲ ConvTranspose 2x2 stride 2, 32→16
    bottom: [conv3x3-ReLU]x2, 32 ch ──────────┘

The two ways up differ on purpose: a learned ConvTranspose (stride 2) on one level, a parameter-free
nearest ``Resize`` followed by a 1x1 conv on the other. Skips join by ``Concat`` on channels, the
skip first. Weights are He-normal (fan-in), biases N(0, 0.1²), from ``torch.Generator(seed)``.

``save`` exports with the TorchScript exporter (``dynamo=False``), opset 17, input ``input``
[batch,3,H,W] (H, W fixed at export), output ``logits`` [batch,classes,H,W], eval mode.

    python models/unet.py -o small_unet.onnx [--seed N] [--size 32] [--classes 2]
"""

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class SmallUNet(nn.Module):
    def __init__(self, in_channels=3, classes=2, widths=(8, 16, 32), size=32):
        super().__init__()
        if size % 4:
            raise ValueError(f"size {size} is not divisible by 4")
        self.in_shape = (in_channels, size, size)
        w1, w2, w3 = widths
        self.enc1 = _block(in_channels, w1)
        self.enc2 = _block(w1, w2)
        self.bottom = _block(w2, w3)
        self.down = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = _block(2 * w2, w2)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w2, w1, 1))
        self.dec1 = _block(2 * w1, w1)
        self.head = nn.Conv2d(w1, classes, 1)

    def forward(self, x):
        s1 = self.enc1(x)  # [N, 8, H, W]
        s2 = self.enc2(self.down(s1))  # [N, 16, H/2, W/2]
        y = self.bottom(self.down(s2))  # [N, 32, H/4, W/4]
        y = self.dec2(torch.cat([s2, self.up2(y)], dim=1))  # [N, 16, H/2, W/2]
        y = self.dec1(torch.cat([s1, self.up1(y)], dim=1))  # [N, 8, H, W]
        return self.head(y)


def seed_weights(model, seed):
    """He-normal (fan-in) weights and N(0, 0.1²) biases from one seeded generator, in module order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight  # Conv [out, in, kh, kw]; ConvTranspose [in, out, kh, kw]
                fan_in = w[0].numel() if isinstance(m, nn.Conv2d) else w.shape[0] * w[0, 0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model.eval()


def small_unet(seed=0, in_channels=3, classes=2, size=32):
    """The three-level U-Net above on ``in_channels`` x size x size."""
    return seed_weights(SmallUNet(in_channels, classes, size=size), seed)


def save(model, path, dynamic_batch=True):
    """Export ``model`` (eval mode) to ``path``: opset 17, ``input`` → ``logits``."""
    model.eval()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # torch warns that dynamo=False is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, *model.in_shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--static-batch", action="store_true", help="batch fixed at 1")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = small_unet(args.seed, args.in_channels, args.classes, args.size)
    save(model, args.output, dynamic_batch=not args.static_batch)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: small U-Net, {params:,} parameters")


if __name__ == "__main__":
    main()
