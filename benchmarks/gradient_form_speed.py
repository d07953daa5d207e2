"""The gradient form against the relevance form of the same LRP-0 rules, timed interleaved in one process.

    .venv/bin/python benchmarks/gradient_form_speed.py out/transformer_speed/vit.onnx --composite AttnLRP --batch 8

Compiles MODEL twice — as lrpc does (the gradient form where every rule is LRP-0-like: lrpc/gradient_form.py)
and with the gradient form switched off (`lrpc.gradient_form.usable`) — and runs the plain model and
both files in onnxruntime (CPU, the bench's session options: no spinning, no memory pattern), each round
every session once, after two warm-ups; prints node counts, medians and each ÷ the forward, and the
largest relative L2 between the two relevance maps.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np
import onnx

import lrpc
import lrpc.gradient_form
from lrpc.bench import _session, feed_shape


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--composite", default="AttnLRP")
    p.add_argument("--rule", help="one rule for every layer instead of the composite (e.g. epsilon)")
    p.add_argument("--convention", default="lrpc")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    options = dict(rule=args.rule) if args.rule else dict(composite=args.composite)
    options["convention"] = args.convention
    files = {"gradient form": lrpc.compile(args.model, **options)}
    with mock.patch.object(lrpc.gradient_form, "usable", lambda *a: False):
        files["relevance form"] = lrpc.compile(args.model, **options)
    paths = {"forward": args.model}
    for name, proto in files.items():
        paths[name] = f"/tmp/lrpc_{name.split()[0]}_form.onnx"
        onnx.save(proto, paths[name])
        print(f"{name}: {len(proto.graph.node)} nodes")
    sessions = {k: _session(v, args.threads) for k, v in paths.items()}
    feed_info = sessions["forward"].get_inputs()[0]
    x = np.random.default_rng(0).random(feed_shape(feed_info.shape, args.batch), dtype=np.float32)
    feeds, times, outs = {feed_info.name: x}, {k: [] for k in sessions}, {}
    for k, s in sessions.items():
        for _ in range(2):
            outs[k] = s.run(None, feeds)
    for _ in range(args.rounds):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - start)
    forward = np.median(times["forward"])
    for k, t in times.items():
        print(f"{k:15s} {np.median(t) * 1e3:8.1f} ms  {np.median(t) / forward:5.2f}×")
    a, b = outs["gradient form"][-1], outs["relevance form"][-1]
    n = len(a)
    err = np.linalg.norm((a - b).reshape(n, -1), axis=1) / np.linalg.norm(b.reshape(n, -1), axis=1)
    print(f"relevance, gradient vs relevance form: worst relative L2 {err.max():.1e}")


if __name__ == "__main__":
    main()
