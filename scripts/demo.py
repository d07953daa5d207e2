"""The README's tutorial, run end to end on the bundled digits CNN.

    python scripts/demo.py [--rule RULE | --composite NAME] [--count N] [--out out/digits]

1. compiles models/digits_cnn.onnx into OUT/digits_explained.onnx (pixels scaled by 1/255 stored
   as its preprocessing) and verifies it against the source;
2. writes N test digits from models/digits_test.npz as PNGs into OUT/images/ (64×64, light strokes
   on black, as the model saw them) — the folder the tutorial explains;
3. explains that folder as `lrpc explain` does: OUT/heatmaps/NAME.png (the digit left, its
   relevance right: red speaks for the predicted class, blue against it) and predictions.csv;
4. writes a grid of all heatmaps, OUT/digits_heatmaps.png, and (with the default rules) the
   README's picture docs/digit_heatmap.png: test digit 2 (a 3) and its heatmap.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

import lrpc
from lrpc_runtime import explain_files

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits_cnn.onnx"
TEST_SET = ROOT / "models" / "digits_test.npz"
FIGURE = ROOT / "docs" / "digit_heatmap.png"
DEFAULT_COMPOSITE = "EpsilonPlus"
FIGURE_DIGIT = 2  # a 3: its curved strokes show well
PIXELS = 64  # digit PNGs are the 8×8 digits enlarged 8× (area resizing gives back the 8×8 exactly)


def write_digit_images(x: np.ndarray, y: np.ndarray, folder: pathlib.Path) -> list[pathlib.Path]:
    """Each [1, 8, 8] digit in [0, 1] as a gray PNG, named by its index and label."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (digit, label) in enumerate(zip(x, y)):
        gray = Image.fromarray(np.rint(digit[0] * 255).astype(np.uint8))
        path = folder / f"digit{i:02d}_label{label}.png"
        gray.resize((PIXELS, PIXELS), Image.Resampling.NEAREST).save(path)
        paths.append(path)
    return paths


def grid(images: list[np.ndarray], columns: int) -> np.ndarray:
    rows = -(-len(images) // columns)
    h, w, _ = images[0].shape
    canvas = np.full((rows * (h + 4), columns * (w + 4), 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 4) : r * (h + 4) + h, c * (w + 4) : c * (w + 4) + w] = image
    return canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", help="one LRP rule for every layer (default: the EpsilonPlus composite)")
    # Not lrpc's default EpsilonPlusFlat: its flat first layer ignores the pixels, and on 8×8 digits
    # read by a 3×3 first conv that blurs each map into a blob; EpsilonPlus keeps the strokes.
    parser.add_argument("--composite", default=DEFAULT_COMPOSITE, help="a named composite (default: EpsilonPlus)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "out" / "digits"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    explained = out / "digits_explained.onnx"
    lrpc.compile(
        MODEL,
        rule=args.rule,
        composite=None if args.rule else args.composite,
        preprocess="scale=1/255",
        output=explained,
    )
    report = lrpc.verify(explained, source=MODEL, samples=8)
    print(report.text())
    if not report.passed:
        return 1

    data = np.load(TEST_SET)
    x, y = data["x"][: args.count], data["y"][: args.count]
    write_digit_images(x, y, out / "images")
    # overwrite: the demo owns OUT/heatmaps, so a second run replaces the first run's folder as a whole
    rows = explain_files(explained, [out / "images"], out / "heatmaps", progress=False, overwrite=True)
    for row, label in zip(rows, y):
        print(
            f"{row['input']}: label {label}, predicted {row['predicted']} (p={row['score']:.3f}), "
            f"relevance sum {row['relevance_sum']:8.3f}"
        )
    tiles = [np.asarray(Image.open(out / "heatmaps" / row["heatmap"]).convert("RGB")) for row in rows]
    Image.fromarray(grid(tiles, columns=4)).save(out / "digits_heatmaps.png")
    if args.rule is None and args.composite == DEFAULT_COMPOSITE:  # the README's picture shows these rules
        FIGURE.parent.mkdir(exist_ok=True)
        Image.fromarray(tiles[min(FIGURE_DIGIT, len(tiles) - 1)]).save(FIGURE, optimize=True)
    predicted = np.array([row["predicted"] for row in rows])
    print(
        f"accuracy on these {len(rows)}: {(predicted == y).mean():.3f}; rules {args.rule or args.composite}; "
        f"digit images in {out / 'images'}/, heatmaps and predictions.csv in {out / 'heatmaps'}/ "
        f"(grid: {out / 'digits_heatmaps.png'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
