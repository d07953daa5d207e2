"""Peak memory of converting a Keras model to ONNX: lrpc's Keras frontend against tf2onnx's from_keras.

Each conversion runs in a fresh child process that builds the seeded model (models/keras_models.py),
records its peak RSS so far (VmHWM in /proc/self/status), resets VmHWM (/proc/self/clear_refs), converts,
and records VmHWM again: the conversion's own peak, the built model included. The parent
watches the child's RSS and kills it past --limit-gb, so a route that balloons cannot take the machine
down (tf2onnx's from_keras was seen past 24 GB on VGG-16 under TF 2.14). Run in .venv-keras:

    .venv-keras/bin/python benchmarks/keras_convert_memory.py --model vgg16 --route lrpc --route from_keras

Routes: ``lrpc`` (lrpc.frontend.keras.from_keras_model: weights never frozen into TensorFlow's graph),
``from_keras`` (tf2onnx.convert.from_keras), ``from_keras_large`` (the same with large_model=True).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTES = ("lrpc", "from_keras", "from_keras_large")


def vm_hwm_mb() -> float:
    """This process's peak resident set so far, in MB (fork/spawn children start their own count)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> float:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); returns that RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def child(model_name: str, route: str) -> dict:
    """Build, convert by `route`, report peak RSS before and after, the ONNX size and the node count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.path.insert(0, str(ROOT / "models"))
    import keras_models

    model = keras_models.build(model_name)
    built = vm_hwm_mb()
    resident = reset_hwm()  # from here VmHWM is the conversion's own peak (the model stays resident)
    start = time.perf_counter()
    if route == "lrpc":
        from lrpc.frontend.keras import from_keras_model

        proto = from_keras_model(model)
    else:
        import tensorflow as tf
        import tf2onnx

        spec = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]
        proto, _ = tf2onnx.convert.from_keras(
            model, input_signature=spec, opset=17, large_model=route == "from_keras_large"
        )
    seconds = time.perf_counter() - start
    weights_mb = sum(int(v.numpy().nbytes) for v in model.weights) / 2**20
    return dict(
        model=model_name,
        route=route,
        peak_building_mb=round(built),
        resident_before_mb=round(resident),
        peak_converting_mb=round(vm_hwm_mb()),
        convert_s=round(seconds, 1),
        weights_mb=round(weights_mb),
        nodes=len(proto.graph.node),
    )


def watched(model_name: str, route: str, limit_gb: float) -> dict:
    """Run `child` in a subprocess, killing it if its RSS passes `limit_gb`."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", model_name, route],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0.0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            break
        peak = max(peak, rss)
        if rss > limit_gb:
            proc.kill()
            proc.wait()
            return dict(model=model_name, route=route, killed_at_gb=round(rss, 2), limit_gb=limit_gb)
        time.sleep(0.05)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        return dict(model=model_name, route=route, failed=proc.returncode)
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16", help="a model of models/keras_models.py (default vgg16)")
    ap.add_argument("--route", action="append", choices=ROUTES, help="repeatable; default: lrpc")
    ap.add_argument("--limit-gb", type=float, default=8.0, help="kill a conversion past this RSS (default 8)")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "ROUTE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    for route in args.route or ["lrpc"]:
        print(json.dumps(watched(args.model, route, args.limit_gb)), flush=True)


if __name__ == "__main__":
    main()
