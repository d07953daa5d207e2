"""Train a small CNN on scikit-learn's bundled 8x8 digits and export it to ONNX.

Run ``python models/digits_cnn.py``. Everything is seeded and runs on two CPU
threads with deterministic algorithms, so a rerun gives the same weights and the
same ONNX bytes. Writes, into ``--out-dir`` (default: this folder):

* ``digits_cnn.onnx``: opset 17, input ``input`` [batch,1,8,8] (pixels in [0,1]),
  output ``probs`` [batch,10] (the model ends in a Softmax), weights inline.
* ``digits_test.npz``: the held-out split, ``x`` float32 [n,1,8,8], ``y`` int64 [n].
"""

import argparse
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent


def seed_everything(seed=0):
    """Seed every RNG in play and ask torch for deterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def load_data():
    """The digits images scaled to [0,1] as [N,1,8,8], split 80/20 stratified."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def build_model():
    """Conv-Conv-Pool-Conv-Pool then two dense layers, ending in Softmax."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
        nn.Softmax(dim=1),
    )


def train(model, x, y, epochs, batch_size=64, lr=3e-3):
    """Adam on cross-entropy of the pre-softmax logits; returns the model in eval mode."""
    logits_net = model[:-1]  # everything but the Softmax
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(logits_net(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model, path):
    """TorchScript-based export, opset 17, dynamic batch axis, weights inline."""
    with warnings.catch_warnings():  # torch warns that dynamo=False is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, path)


def _export(model, path):
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["probs"],
        dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}},
        do_constant_folding=True,
    )


def verify(model, path, x):
    """Checker passes; onnxruntime matches torch at batch 1 and 16."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 16):
        got = sess.run(["probs"], {"input": x[:n]})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x[:n])).numpy()
        assert got.shape == (n, 10), got.shape
        diff = float(np.abs(got - want).max())
        assert diff < 1e-5, f"batch {n}: max abs diff {diff}"
        print(f"onnxruntime batch {n}: max abs diff vs torch {diff:.2e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)

    start = time.perf_counter()
    seed_everything(0)
    x_tr, x_te, y_tr, y_te = load_data()
    model = train(build_model(), x_tr, y_tr, args.epochs)
    print(f"test accuracy: {accuracy(model, x_te, y_te):.3f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out_dir / "digits_cnn.onnx"
    export(model, onnx_path)
    verify(model, onnx_path, x_te)
    np.savez_compressed(args.out_dir / "digits_test.npz", x=x_te, y=y_te)
    print(
        f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and digits_test.npz"
        f" in {time.perf_counter() - start:.1f}s"
    )


if __name__ == "__main__":
    main()
