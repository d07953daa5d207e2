"""The main job on the bundled model: compile the digits CNN, explain test digits, write heatmaps.

    python scripts/demo.py [--rule RULE | --composite NAME] [--count N] [--out out/digits]

Writes the explained model, one PNG per digit (the digit left, its relevance right: red supports
the predicted class, blue speaks against it) and a grid of all of them.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

import lrpc
from lrpc_runtime import Explainer, heatmap

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits_cnn.onnx"
TEST_SET = ROOT / "models" / "digits_test.npz"


def grid(images: list[np.ndarray], columns: int) -> np.ndarray:
    rows = -(-len(images) // columns)
    h, w, _ = images[0].shape
    canvas = np.full((rows * (h + 4), columns * (w + 4), 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = image
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", help="one LRP rule for every layer (default: lrpc's default composite)")
    # Not lrpc's default EpsilonPlusFlat: its flat first layer ignores the pixels, and on 8×8 digits
    # read by a 3×3 first conv that blurs each map into a blob; EpsilonPlus keeps the strokes.
    parser.add_argument("--composite", default="EpsilonPlus", help="a named composite (default: EpsilonPlus)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "out" / "digits"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    explained_path = out / "digits_explained.onnx"
    lrpc.compile(MODEL, rule=args.rule, composite=None if args.rule else args.composite, output=explained_path)
    data = np.load(TEST_SET)
    x, y = data["x"][:args.count], data["y"][:args.count]

    result = Explainer(explained_path).explain(x)
    probs, relevance = result.output, result.relevance_map
    predicted = probs.argmax(axis=1)
    from PIL import Image

    tiles = []
    for i in range(len(x)):
        gray = np.repeat((x[i, 0] / max(x[i, 0].max(), 1e-9) * 255).astype(np.uint8)[..., None], 3, axis=2)
        pair = np.concatenate([gray, heatmap(relevance[i, 0])], axis=1)
        pair = pair.repeat(16, axis=0).repeat(16, axis=1)
        Image.fromarray(pair).save(out / f"digit{i:02d}_label{y[i]}_pred{predicted[i]}.png")
        tiles.append(pair)
        print(f"digit {i:2d}: label {y[i]}, predicted {predicted[i]} (p={probs[i].max():.3f}), "
              f"relevance sum {relevance[i].sum():8.3f}")
    Image.fromarray(grid(tiles, columns=4)).save(out / "digits_heatmaps.png")
    print(f"accuracy on these {len(x)}: {(predicted == y).mean():.3f}; rules {args.rule or args.composite}; "
          f"heatmaps in {out}/ (grid: digits_heatmaps.png)")


if __name__ == "__main__":
    main()
