"""The two-output convolutional autoencoder of the LRP-on-autoencoders user report, in torch.

A port of the report's Keras ``ConnectomeCNNAutoencoder`` (channels-first here): the input is a
connectivity-style matrix, x: [batch, C, W, W] (default C=1, W=16), F = ``n_filter`` (32).

    encoder  Conv2d C→F, kernel (1, W) + SELU          [N, F, W, 1]   row-wise filters
             Dropout2d (spatial dropout)
             Conv2d F→2F, kernel (W, 1) + SELU          [N, 2F, 1, 1]
             Dropout, Reshape                           [N, 2F]
             Linear 2F→D + SELU                         [N, D]  = the latent ("latent" in the ONNX graph)
    head     Linear D→classes                           [N, classes] = output "class_logits"
    decoder  Linear D→2F + SELU, Reshape                [N, 2F, 1, 1]
             ConvTranspose2d 2F→2F, kernel (1, 1) + SELU
             ConvTranspose2d 2F→F, kernel (W, 1) + SELU [N, F, W, 1]
             ConvTranspose2d F→C, kernel (1, W) + tanh  [N, C, W, W] = output "reconstruction"

Differences from the report, on purpose: the class output is logits (the report's softmax is what
LRP strips anyway), and the decoder reads the latent (``decode_from="latent"``, the usual
autoencoder) where the report's Dense ``dense2`` reads the class softmax output;
``decode_from="logits"`` feeds it the class logits instead, closest to the report while keeping the
graph free of a mid-graph Softmax. Dropout rates follow the report's ``keep_pr=0.65`` passed as Keras'
*rate* (0.65 dropped); in eval mode and in the ONNX graph the dropouts are gone.

The exported latent: the legacy exporter names the latent SELU's output ``/latent_act/Selu_output_0``;
``save`` renames that value to ``latent`` (output of node ``/latent_act/Selu``), so the compiler can
explain a latent unit by name. Outputs: ``class_logits`` [batch, classes], ``reconstruction``
[batch, C, W, W]; input ``input``; opset 17; dynamic batch.

``train_synthetic`` fits it briefly to two classes of correlation matrices (class 1 has a block of
W/4 nodes driven by a shared signal): cross-entropy on the logits plus MSE of the reconstruction.

    python models/autoencoder.py -o autoencoder.onnx [--seed N] [--width 16] [--train [--epochs 30]]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

OPSET = 17
LATENT_RAW_NAME = "/latent_act/Selu_output_0"
LATENT = "latent"
OUTPUTS = ["class_logits", "reconstruction"]


class ConnectomeAutoencoder(nn.Module):
    def __init__(self, width=16, channels=1, n_filter=32, n_dense=64, classes=2, dropout=0.65, decode_from="latent"):
        super().__init__()
        if decode_from not in ("latent", "logits"):
            raise ValueError(f"decode_from must be 'latent' or 'logits', not {decode_from!r}")
        self.in_shape = (channels, width, width)
        self.decode_from = decode_from
        self.code = 2 * n_filter
        self.conv1 = nn.Conv2d(channels, n_filter, (1, width))
        self.drop1 = nn.Dropout2d(dropout)
        self.conv2 = nn.Conv2d(n_filter, self.code, (width, 1))
        self.drop2 = nn.Dropout(dropout)
        self.dense1 = nn.Linear(self.code, n_dense)
        self.latent_act = nn.SELU()  # its output is the latent; the module name fixes the ONNX name
        self.classify = nn.Linear(n_dense, classes)
        self.dense2 = nn.Linear(n_dense if decode_from == "latent" else classes, self.code)
        self.deconv3 = nn.ConvTranspose2d(self.code, self.code, (1, 1))
        self.deconv4 = nn.ConvTranspose2d(self.code, n_filter, (width, 1))
        self.deconv5 = nn.ConvTranspose2d(n_filter, channels, (1, width))

    def encode(self, x):
        h = self.drop1(F.selu(self.conv1(x)))
        h = self.drop2(F.selu(self.conv2(h)))
        return self.latent_act(self.dense1(h.reshape(-1, self.code)))

    def forward(self, x):
        z = self.encode(x)
        logits = self.classify(z)
        d = F.selu(self.dense2(z if self.decode_from == "latent" else logits))
        d = F.selu(self.deconv3(d.reshape(-1, self.code, 1, 1)))
        d = F.selu(self.deconv4(d))
        return logits, torch.tanh(self.deconv5(d))


def seed_weights(model, seed):
    """Glorot-uniform weights (as the report's Keras layers) and N(0, 0.05²) biases, seeded."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = m.weight
                receptive = w[0, 0].numel() if w.dim() > 2 else 1
                fan_a, fan_b = w.shape[0] * receptive, w.shape[1] * receptive
                bound = (6.0 / (fan_a + fan_b)) ** 0.5
                w.copy_((torch.rand(w.shape, generator=gen) * 2 - 1) * bound)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
    return model.eval()


def autoencoder(seed=0, width=16, channels=1, decode_from="latent", **kwargs):
    """The seeded, untrained autoencoder in eval mode."""
    model = ConnectomeAutoencoder(width, channels, decode_from=decode_from, **kwargs)
    return seed_weights(model, seed)


def synthetic_data(n, width=16, steps=40, seed=0):
    """``n`` correlation matrices [n,1,W,W] in [-1,1] and labels; class 1 has a co-active block."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    signals = rng.standard_normal((n, steps, width))
    block = width // 4
    shared = rng.standard_normal((n, steps, 1))
    signals[:, :, :block] += y[:, None, None] * 1.5 * shared
    x = np.stack([np.corrcoef(s, rowvar=False) for s in signals]).astype(np.float32)
    return x[:, None], y.astype(np.int64)


def train_synthetic(model, epochs=30, n_train=512, n_test=256, seed=0, lr=3e-3):
    """Adam on CE(logits) + MSE(reconstruction); returns (test accuracy, test reconstruction MSE)."""
    torch.manual_seed(seed)
    width = model.in_shape[-1]
    x_tr, y_tr = (torch.from_numpy(a) for a in synthetic_data(n_train, width, seed=seed))
    x_te, y_te = (torch.from_numpy(a) for a in synthetic_data(n_test, width, seed=seed + 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, 32):
            idx = order[i : i + 32]
            logits, rec = model(x_tr[idx])
            loss = F.cross_entropy(logits, y_tr[idx]) + F.mse_loss(rec, x_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits, rec = model(x_te)
    acc = float((logits.argmax(1) == y_te).float().mean())
    return acc, float(F.mse_loss(rec, x_te))


def save(model, path, dynamic_batch=True):
    """Export (eval mode) to ``path``: ``input`` → ``class_logits``, ``reconstruction``; latent named."""
    model.eval()
    axes = {name: {0: "batch"} for name in ["input", *OUTPUTS]} if dynamic_batch else None
    with warnings.catch_warnings():  # torch warns that dynamo=False is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, *model.in_shape),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=OUTPUTS,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    rename_value(proto.graph, LATENT_RAW_NAME, LATENT)
    # The exporter leaves the reconstruction's H, W symbolic ("Tanhreconstruction_dim_2"): fix them.
    dims = proto.graph.output[1].type.tensor_type.shape.dim
    for dim, size in zip(dims[1:], model.in_shape):
        dim.dim_value = size
    onnx.save_model(proto, str(path))


def rename_value(graph, old, new):
    """Rename the value ``old`` (a node output) to ``new`` in its producer and all its consumers."""
    producers = [n for n in graph.node if old in n.output]
    if len(producers) != 1:
        raise ValueError(f"expected one producer of {old!r}, found {len(producers)}")
    for node in graph.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--decode-from", choices=["latent", "logits"], default="latent")
    ap.add_argument("--train", action="store_true", help="fit briefly to synthetic correlation matrices")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = autoencoder(args.seed, args.width, args.channels, args.decode_from)
    if args.train:
        if args.channels != 1:
            ap.error("--train makes one-channel matrices")
        start = time.perf_counter()
        acc, mse = train_synthetic(model, args.epochs, seed=args.seed)
        print(
            f"trained {args.epochs} epochs in {time.perf_counter() - start:.1f}s:"
            f" test accuracy {acc:.3f}, reconstruction MSE {mse:.4f}"
        )
    save(model, args.output)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: autoencoder, {params:,} parameters; outputs {OUTPUTS}, latent {LATENT!r}")


if __name__ == "__main__":
    main()
