"""The reference side of benchmarks/speed.py: Zennit and iNNvestigate timed beside lrpc, interleaved.

A cell is one model × method × batch. Its steps run in turn — one round is each step once — and the
first `warmup` rounds are not counted; each step's median and spread (p90 − p10) / median come from
lrpc.bench's `_timing`, so the numbers read like `lrpc bench`'s.

* Zennit cell (one process): onnxruntime forward, torch forward (`torch.no_grad()`), Zennit's
  explanation as a user runs it — `with composite.context(model) as modified:` the forward, the
  one-hot of the largest logit, `torch.autograd.grad` — and lrpc's explained graph in onnxruntime.
  The composite object is built once; entering and leaving its context (hooks, the ResNet canonizers'
  BatchNorm merge) is inside the timed call.
* iNNvestigate cell: onnxruntime forward and lrpc's graph here, `analyzer.analyze(x)` in the
  benchmarks/innvestigate_speed.py server (a .venv-innvestigate process), which times the call itself
  and waits on its stdin between calls, so the three still alternate on the same cores.

Two runtimes take turns on the same cores here, so neither may keep its idle threads spinning while
the other works: benchmarks/speed.py sets OMP_WAIT_POLICY=PASSIVE before torch loads (its OpenMP
threads then sleep between parallel regions) and these cells' onnxruntime sessions turn
`session.intra_op.allow_spinning` off. Measured on the digits CNN at batch 1 under load ~5 on 2 cores:
with both spinning, the torch forward's median jumped between 0.13 and 62 ms from cell to cell and
Zennit's between 1.3 and 247 ms; with neither, 0.19 ms ±14 % and 1.4–1.7 ms in every cell.
(lrpc.bench's own cells, two onnxruntime sessions taking turns, turn spinning off too: PROFILE.md §10.)

Memory: onnxruntime keeps a run's buffers in its arena for the next run, and lrpc's graphs at VGG-16
batch 16 hold 6–10 GB that way; beside Zennit's own peak, the first full run was killed at 24 GB (in
the EpsilonGammaBox cell). So in the cells of VGG-16 and ResNet-50 lrpc's graph gets a session of its
own each round (benchmarks/speed.py's lrpc_side): created and run twice untimed (the arena fills), then
the timed run — a warm run, as in lrpc.bench — then dropped before the reference's step, so the two
explanations' memory never adds up. Two untimed runs,
because a fresh session reaches its steady speed at the third (VGG-16 epsilon, batch 16, runs 1–5 of
one session: 3.76, 3.63, 3.08, 3.12, 3.07 s). Shrinking the arena after every run instead (run option
`memory.enable_memory_arena_shrinkage`) makes each run fault its buffers in anew, which is not how a
service runs lrpc: 3.70 s against 3.10 s for a long-lived session, same cell.

The Keras model for iNNvestigate is built from the torch model (`sequential_spec`, `resnet_spec`): the
same layers, the same weights transposed to Keras' layouts (HWIO kernels, the first dense layer's rows
permuted from CHW to HWC flattening order, BatchNorm's γ, β, running mean and variance).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrpc.bench import _timing

HERE = Path(__file__).resolve().parent
SERVER = HERE / "innvestigate_speed.py"


def interleave(steps: dict, repeats: int, warmup: int) -> dict:
    """{name: Timing} of `steps` ({name: fn}) run in turn; a fn may return its own duration (a float)."""
    samples = {name: [] for name in steps}
    for round_ in range(warmup + repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            own = fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                samples[name].append(own if type(own) is float else elapsed)
    return {name: _timing(s) for name, s in samples.items()}


def ort_step(session, x):
    feeds = {session.get_inputs()[0].name: x}

    def run():
        session.run(None, feeds)

    return run


def fresh_step(path, threads, x, untimed=2):
    """lrpc's graph in a session of its own each call: created and run `untimed` times, then the timed run
    (returned), then dropped, so that its arena is empty while the reference runs (module docstring)."""

    def run():
        s = session(path, threads)
        feeds = {s.get_inputs()[0].name: x}
        for _ in range(untimed):
            s.run(None, feeds)
        start = time.perf_counter()
        s.run(None, feeds)
        return time.perf_counter() - start

    return run


def torch_forward_step(view, x):
    def run():
        with torch.no_grad():
            view(x)

    return run


def zennit_step(view, composite, x):
    """Zennit's explanation of each sample's largest logit, the one-hot as grad_output."""
    xg = x.clone().requires_grad_(True)

    def run():
        with composite.context(view) as modified:
            out = modified(xg)
            onehot = torch.nn.functional.one_hot(out.argmax(1), out.shape[1]).to(out.dtype)
            torch.autograd.grad(out, xg, grad_outputs=onehot)

    return run


def lrpc_step(explained, threads, x):
    """`explained`: a session (kept across calls) or the compiled file's Path (a fresh session per call)."""
    return fresh_step(explained, threads, x) if isinstance(explained, Path) else ort_step(explained, x)


def zennit_cell(case, composite, forward, explained, threads, batch, repeats, warmup) -> dict:
    """Timings of the four Zennit-cell steps at `batch` (`explained` as lrpc_step takes it)."""
    x_np = case.inputs(batch)
    x = torch.from_numpy(x_np)
    steps = {
        "ort_forward": ort_step(forward, x_np),
        "torch_forward": torch_forward_step(case.view, x),
        "zennit": zennit_step(case.view, composite, x),
        "lrpc": lrpc_step(explained, threads, x_np),
    }
    return interleave(steps, repeats, warmup)


# ------------------------------------------------------------------------------------------ Keras model


def _kernel(conv: nn.Conv2d):
    if conv.groups != 1 or conv.dilation != (1, 1) or len(set(conv.kernel_size)) != 1 or len(set(conv.stride)) != 1:
        raise ValueError(f"Keras copy: handles square, ungrouped convs only: {conv}")
    return conv.weight.detach().permute(2, 3, 1, 0).numpy()  # OIHW → HWIO


def _flatten_input_shape(view, in_shape):
    flatten = next(m for m in view.modules() if isinstance(m, nn.Flatten))
    seen = {}

    def record(module, args, out):  # returns None: the output stays as it is
        seen["shape"] = tuple(args[0].shape[1:])

    hook = flatten.register_forward_hook(record)
    with torch.no_grad():
        view(torch.zeros(1, *in_shape))
    hook.remove()
    return seen["shape"]


def sequential_spec(name, view: nn.Sequential, in_shape):
    """Layer list and weights of a Sequential of Conv2d / ReLU / MaxPool2d / Flatten / Linear."""
    layers, weights, chw = [], {}, None
    for key, m in view.named_children():
        lname = f"t_{key}"
        if isinstance(m, nn.Conv2d):
            layers.append(
                dict(
                    type="conv",
                    name=lname,
                    filters=m.out_channels,
                    kernel=m.kernel_size[0],
                    stride=m.stride[0],
                    pad=m.padding[0],
                    bias=m.bias is not None,
                )
            )
            weights[lname] = [_kernel(m)] + ([m.bias.detach().numpy()] if m.bias is not None else [])
        elif isinstance(m, nn.ReLU):
            layers[-1]["activation"] = "relu"
        elif isinstance(m, nn.MaxPool2d):
            if m.padding not in (0, (0, 0)):
                raise ValueError(f"Keras copy: padded max pool {m}")
            layers.append(dict(type="maxpool", name=lname, size=m.kernel_size, stride=m.stride))
        elif isinstance(m, nn.Flatten):
            layers.append(dict(type="flatten", name=lname))
            chw = _flatten_input_shape(view, in_shape)
        elif isinstance(m, nn.Linear):
            w = m.weight.detach().numpy()
            if chw is not None and len(chw) == 3:  # rows in torch's CHW order → Keras' HWC order
                w = w.reshape(-1, *chw).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            chw = None
            layers.append(dict(type="dense", name=lname, units=m.out_features, bias=m.bias is not None))
            weights[lname] = [w.T.copy()] + ([m.bias.detach().numpy()] if m.bias is not None else [])
        else:
            raise ValueError(f"Keras copy: no Keras layer for {m}")
    return dict(kind="sequential", name=name, input=[*in_shape[1:], in_shape[0]], layers=layers), weights


def resnet_spec(name, model):
    """Stages, widths and weights of a models/resnet.py bottleneck ResNet (names: torch module names)."""
    stages, widths = [], []
    for block in model.blocks:
        if not stages or block.conv2.stride != (1, 1):
            stages.append(0)
            widths.append(block.conv1.out_channels)
        stages[-1] += 1
    weights = {}
    for key, m in model.named_modules():
        lname = "t_" + key.replace(".", "_")
        if isinstance(m, nn.Conv2d):
            weights[lname] = [_kernel(m)]
        elif isinstance(m, nn.BatchNorm2d):
            weights[lname] = [t.detach().numpy() for t in (m.weight, m.bias, m.running_mean, m.running_var)]
        elif isinstance(m, nn.Linear):
            weights[lname] = [m.weight.detach().numpy().T.copy(), m.bias.detach().numpy()]
    bn_eps = next(m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    in_shape = model.in_shape
    spec = dict(
        kind="resnet",
        name=name,
        input=[*in_shape[1:], in_shape[0]],
        layers=stages,
        widths=widths,
        classes=model.fc.out_features,
        bn_eps=bn_eps,
    )
    return spec, weights


# ------------------------------------------------------------------------------------------ iNNvestigate


class InnvestigateServer:
    """benchmarks/innvestigate_speed.py in .venv-innvestigate, one JSON request and reply per line."""

    def __init__(self, python, spec, weights, x, threads, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            k: folder / f"{spec['name']}.{k}" for k in ("spec.json", "weights.npz", "inputs.npy", "logits.npy", "log")
        }
        paths["spec.json"].write_text(json.dumps(spec))
        np.savez(
            paths["weights.npz"],
            **{f"{layer}|{i}": a for layer, arrays in weights.items() for i, a in enumerate(arrays)},
        )
        np.save(paths["inputs.npy"], x)
        self.log = paths["log"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    str(python),
                    str(SERVER),
                    "--spec",
                    str(paths["spec.json"]),
                    "--weights",
                    str(paths["weights.npz"]),
                    "--inputs",
                    str(paths["inputs.npy"]),
                    "--logits-out",
                    str(paths["logits.npy"]),
                    "--threads",
                    str(threads),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        self.ready = self._read()
        self.logits = np.load(paths["logits.npy"])

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the iNNvestigate server stopped (exit {self.proc.wait()}); see {self.log}")
        return json.loads(line)

    def request(self, **kw) -> dict:
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def innvestigate_cell(server, analyzer, forward, explained, threads, x, repeats, warmup) -> dict:
    """Timings of onnxruntime forward, lrpc's graph and iNNvestigate's analyze() at x's batch."""
    batch = len(x)
    steps = {
        "ort_forward": ort_step(forward, x),
        "lrpc": lrpc_step(explained, threads, x),
        "innvestigate": lambda: float(server.request(cmd="run", analyzer=analyzer, batch=batch)["s"]),
    }
    return interleave(steps, repeats, warmup)


def session(path, threads):
    """An onnxruntime session as lrpc.bench makes one (intra-op `threads`, inter-op 1, default graph
    optimizations), except that its idle threads sleep instead of spinning (see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
