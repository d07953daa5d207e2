"""The residual joins' ε: `lrpc verify --source` under the default composite with the joins' stabilizer
at its default (1e-6) and at 1e-2 (`--composite EpsilonPlusFlat:stabilizer=1e-2`), on timm residual nets
prepared as in benchmarks/modern_zoo.py (random weights, BatchNorm statistics from one batch, 64×64).

    .venv/bin/python benchmarks/join_stabilizer.py                      # ~3 min on 2 cores
    .venv/bin/python benchmarks/join_stabilizer.py legacy_xception      # one model

Prints one line per model and composite: verify's float64 status and its error (4 random samples).
"""

from __future__ import annotations

import sys

import modern_zoo

MODELS = ("legacy_xception", "repvgg_a0", "resnet50", "dla34", "cspresnet50")
COMPOSITES = ("EpsilonPlusFlat", "EpsilonPlusFlat:stabilizer=1e-2")


def main(names) -> None:
    import lrpc

    for name in names or MODELS:
        _, source = modern_zoo.build(name, {}, 64)
        for composite in COMPOSITES:
            report = lrpc.verify(lrpc.compile(source, composite=composite), source=source, samples=4)
            check = next(c for c in report.checks if c.name == "float64")
            print(f"{name:16} {composite:34} {check.status:16} {check.detail.split(' (max')[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
