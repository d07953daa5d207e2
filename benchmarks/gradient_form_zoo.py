"""The gradient form on the modern-convnet zoo: which form each model gets, and `lrpc verify` of each.

    .venv/bin/python benchmarks/gradient_form_zoo.py [--folder out/modern_zoo] [--rule epsilon --convention lxt]

For every ONNX file in FOLDER (benchmarks/modern_zoo.py leaves its exports there), compile with the options,
note whether lrpc built the gradient form (lrpc/gradient_form.py; `lrpc inspect`'s "lowering:" line),
verify the file against a fresh compile of the source (its float64 check: benchmarks/zoo_cells.py), and
give the largest relative distance to the relevance form of the same rules on the same samples (the
gradient form switched off, `lrpc.gradient_form.usable`). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort

import lrpc
import lrpc.gradient_form
from zoo_cells import cell_text, compile_and_verify

ROOT = Path(__file__).resolve().parent.parent


def _relevance(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[-1]


def row(path: Path, options: dict, samples: int) -> str:
    gradient = lrpc.compile(str(path), **options)
    with mock.patch.object(lrpc.gradient_form, "usable", lambda *a: False):
        relevance = lrpc.compile(str(path), **options)
    taken = len(gradient.graph.node) != len(relevance.graph.node)
    shape = [samples] + [d.dim_value for d in gradient.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    a, b = _relevance(gradient, x), _relevance(relevance, x)
    apart = max(float(np.abs(a[n] - b[n]).max() / np.abs(b[n]).max()) for n in range(samples))
    cell = cell_text(compile_and_verify(str(path), samples=samples, **options))
    form = "gradient" if taken else "relevance"
    return f"| {path.stem} | {form} | {len(gradient.graph.node)} / {len(relevance.graph.node)} | {apart:.1e} | {cell} |"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, default=ROOT / "out" / "modern_zoo")
    p.add_argument("--rule", default="epsilon")
    p.add_argument("--convention", default="lxt")
    p.add_argument("--samples", type=int, default=4)
    args = p.parse_args(argv)
    options = dict(rule=args.rule, convention=args.convention)
    print(f"`--rule {args.rule} --convention {args.convention}`, {args.samples} samples U[0, 1)\n")
    print(
        "| model | form | nodes (this form / relevance form) | max rel. distance to the relevance form "
        "| compiled, verify |"
    )
    print("|---|---|---|---|---|")
    for path in sorted(args.folder.glob("*.onnx")):
        print(row(path, options, args.samples), flush=True)


if __name__ == "__main__":
    main()
