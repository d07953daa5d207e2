"""Tiny Hugging Face transformers with seeded random weights, exported as a user would, for the README's
transformer examples (no download: configs only, `pretrained` weights never fetched).

    python models/tiny_transformers.py --out tiny

writes tiny/bert.onnx (BertForSequenceClassification: int64 input_ids and attention_mask [batch, seq] →
logits [batch, 3]), tiny/gpt2.onnx (GPT2LMHeadModel: input_ids → logits [batch, seq, vocab]), tiny/vit.onnx
(ViTForImageClassification: pixel_values [batch, 3, 32, 32] → logits [batch, 3]), all through
torch.onnx.export(dynamo=True) at opset 18 with dynamic batch and sequence; tiny/vocab.txt (token i is
`tok<i>`), tiny/prompt.json (two prompts of token ids) and tiny/image.png (a 32×32 test picture).

A real model is exported the same way: `AutoModelForSequenceClassification.from_pretrained(NAME)` in
place of the config, the same wrapper and export call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import transformers as T

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
VOCAB = 100


class Logits(torch.nn.Module):
    """model(**inputs).logits as a function of positional tensors (what torch.onnx.export traces)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors):
        return (
            self.model(**dict(zip(self.names, tensors)), use_cache=False).logits
            if isinstance(self.model, T.GPT2LMHeadModel)
            else self.model(**dict(zip(self.names, tensors))).logits
        )


def models():
    """(name, model, example inputs by name) with seeded weights."""
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 7))
    yield (
        "bert",
        T.BertForSequenceClassification(T.BertConfig(**SMALL, vocab_size=VOCAB, num_labels=3)),
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
    )
    yield "gpt2", T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB)), {"input_ids": ids}
    yield (
        "vit",
        T.ViTForImageClassification(T.ViTConfig(**SMALL, image_size=32, patch_size=8, num_labels=3)),
        {"pixel_values": torch.randn(2, 3, 32, 32)},
    )


def export(model, inputs: dict, path: Path) -> None:
    dim = torch.export.Dim.AUTO
    dynamic = {"tensors": tuple({0: dim} if n == "pixel_values" else {0: dim, 1: dim} for n in inputs)}
    torch.onnx.export(
        Logits(model.eval(), list(inputs)),
        tuple(inputs.values()),
        str(path),
        dynamo=True,
        opset_version=18,
        input_names=list(inputs),
        output_names=["logits"],
        dynamic_shapes=dynamic,
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tiny", help="the folder to write (created)")
    out = Path(ap.parse_args(argv).out)
    out.mkdir(parents=True, exist_ok=True)
    for name, model, inputs in models():
        with torch.no_grad():
            export(model, inputs, out / f"{name}.onnx")
        print(f"wrote {out / name}.onnx")
    (out / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(VOCAB)))
    (out / "prompt.json").write_text(json.dumps([[5, 17, 42, 8, 99, 3, 11], [1, 2, 3, 4, 5]]))
    from PIL import Image

    yy, xx = np.mgrid[0:32, 0:32]
    picture = np.stack([xx * 8, yy * 8, ((xx - 16) ** 2 + (yy - 16) ** 2 < 80) * 255], -1).astype(np.uint8)
    Image.fromarray(picture).save(out / "image.png")
    print(f"wrote {out}/vocab.txt, prompt.json, image.png")


if __name__ == "__main__":
    main()
