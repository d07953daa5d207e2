"""LXT 2.1's AttnLRP and CP-LRP on tiny Hugging Face transformers: the independent reference that lrpc's
attention rules are checked against (docs/design.md §3.4; conventions in benchmarks/LXT_TRANSFORMERS.md).

What is computed. `build(name)` makes a tiny model (hidden 32, 2 layers, 4 heads, intermediate 64,
vocab 100, 64 positions; Llama/Qwen2 with 2 key-value heads; ViT 32×32 images, patch 8) with seeded
random weights (linears N(0, 1/fan_in), biases 0.1·N, norms weight 1 + 0.1·N and bias 0.1·N,
embeddings / cls token / position tables 0.5·N), eval mode, dropout 0, eager attention, no cache.
`Logits(model)` takes `inputs_embeds` x [b, s, 32] (ViT: pixel_values [b, 3, 32, 32]) and returns
the logits: classifiers (bert, distilbert, roberta: ...ForSequenceClassification; vit:
ViTForImageClassification) [b, 3]; language models (gpt2: GPT2LMHeadModel; llama, qwen2:
...ForCausalLM) the full [b, s, 100]. `export` writes it as ONNX (input "x", output "logits"; opset 17
TorchScript by default, opset 18 dynamo=True also works); for the causal LMs transformers' vmap-built
mask is swapped for `_causal_mask` while tracing (TorchScript cannot trace the vmap).

`lxt_relevance(name, mode, x)` is LXT's relevance x ⊙ x.grad, float64: LXT's patch map is applied
(`lxt.efficient.monkey_patch`) *before* the model is built (BERT's map replaces the classes of
modeling_bert), the built model gets the unpatched model's state dict, the backward pass starts
from the sum over samples of the selected logits with gradient 1 — so the start relevance of each
sample is its target logit's value. Target: classifiers the argmax class per sample; LMs the argmax
token of the last position, i.e. logits[b, -1, t_b] (given targets override; the CLI records them).

Patch maps. LXT's own maps where they exist: bert (attnLRP only: a patched copy of an older
modeling_bert), gpt2, llama, qwen2 (attnLRP and cp_LRP). Built here from LXT's functions
(`patch_method`, `layer_norm_forward`, `dropout_forward`, `patch_attention`, `patch_cp_attention`,
`identity_rule_implicit`, `divide_gradient`, `stop_gradient`): bert cplrp, distilbert, roberta, vit
— covering every nn.LayerNorm, every activation (intermediate GELU, BERT pooler tanh, RoBERTa head
tanh), and both attention products; `custom_bert` is the built map for BERT's attnlrp too, checked
against LXT's own map. Nothing else in these models is nonlinear except DistilBERT's classifier
ReLU, left to the plain gradient (which is the identity rule: relu(x) = x·𝟙[x>0]).

Conventions (LXT, as lrpc must reproduce them), with R the relevance at an op's output:
* everything unpatched gets the plain gradient: linears, residual adds, embedding sums, RoPE,
  reshapes: LRP-0 with ε = 0, and a constant addend (bias, position / token-type embedding, cls
  token, RoPE is linear, attention-mask constant) absorbs its share R·c/(a + c);
* activations (GELU erf and tanh forms, SiLU, tanh): identity rule R_x = R_y, as the gradient
  times f(x)/(x + 1e-10);
* LayerNorm: std detached, mean kept (R_x = x ⊙ (u − mean u), u = w ⊙ (R/y)/σ, the bias absorbing);
  RMSNorm: rsqrt detached (weight after it), R_x = R_y, computed in float32 by LXT (so Llama/Qwen2
  float64 relevance is good to ~1e-8 only);
* AttnLRP attention: the gradient into q and k divided by 4, into v by 2 (uniform rule on both
  matmuls; BERT's copy divides the scores' and the context's gradients by 2: the same thing), softmax
  by autograd; gated MLP (Llama/Qwen2): identity on act(gate), gradient of act(gate)·up divided by 2;
* CP-LRP: q and k detached (softmax weights constant, all relevance through v); gated MLP: the gate
  projection detached (act(gate) a constant), all relevance through up; everything else as AttnLRP.

Monkey patching changes classes and modules process-wide; `_patched` snapshots every target (class
dicts, module dicts, transformers' shared attention-function mapping) and restores them, so both
modes run in one process (`--check-isolation` compares with a fresh subprocess per (model, mode)).
transformers' modeling modules are imported before torchvision is stubbed (transformers probes
`find_spec("torchvision")`, which fails on the stub).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import transformers
import transformers.masking_utils
from transformers.models.bert import modeling_bert
from transformers.models.distilbert import modeling_distilbert
from transformers.models.gpt2 import modeling_gpt2
from transformers.models.llama import modeling_llama
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.roberta import modeling_roberta
from transformers.models.vit import modeling_vit
from transformers import modeling_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchvision_stub import stub_torchvision  # noqa: E402

stub_torchvision()
import lxt.efficient  # noqa: E402
from lxt.efficient import models as lxt_models  # noqa: E402
from lxt.efficient.patches import (  # noqa: E402
    dropout_forward,
    layer_norm_forward,
    patch_attention,
    patch_cp_attention,
    patch_method,
)
from lxt.efficient.rules import divide_gradient, identity_rule_implicit, stop_gradient  # noqa: E402

NAMES = ("bert", "distilbert", "roberta", "vit", "gpt2", "llama", "qwen2")
MODES = ("attnlrp", "cplrp")
LMS = ("gpt2", "llama", "qwen2")
H, L, HEADS, FF, VOCAB, POS, LABELS = 32, 2, 4, 64, 100, 64, 3


def _config(name, attn="eager"):
    common = dict(num_labels=LABELS, attn_implementation=attn, use_cache=False)
    bert_like = dict(
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=HEADS,
        intermediate_size=FF,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **common,
    )
    if name == "bert":
        return transformers.BertConfig(vocab_size=VOCAB, max_position_embeddings=POS, **bert_like)
    if name == "roberta":
        return transformers.RobertaConfig(vocab_size=VOCAB, max_position_embeddings=POS, pad_token_id=1, **bert_like)
    if name == "vit":
        return transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, **bert_like)
    if name == "distilbert":
        return transformers.DistilBertConfig(
            vocab_size=VOCAB,
            max_position_embeddings=POS,
            dim=H,
            n_layers=L,
            n_heads=HEADS,
            hidden_dim=FF,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
            **common,
        )
    if name == "gpt2":
        return transformers.GPT2Config(
            vocab_size=VOCAB,
            n_positions=POS,
            n_embd=H,
            n_layer=L,
            n_head=HEADS,
            n_inner=FF,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[name]
    return cls(
        vocab_size=VOCAB,
        hidden_size=H,
        intermediate_size=FF,
        num_hidden_layers=L,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        max_position_embeddings=POS,
        attention_dropout=0.0,
        **common,
    )


_MODEL_CLASS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "vit": "ViTForImageClassification",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
_MODULE = {
    "bert": modeling_bert,
    "roberta": modeling_roberta,
    "distilbert": modeling_distilbert,
    "vit": modeling_vit,
    "gpt2": modeling_gpt2,
    "llama": modeling_llama,
    "qwen2": modeling_qwen2,
}


def _init(model, seed):
    """Seeded weights that exercise every convention (non-trivial norm weights and biases)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda p: torch.randn(p.shape, generator=g, dtype=p.dtype)  # noqa: E731
    done = set()
    with torch.no_grad():
        for _, m in sorted(model.named_modules(), key=lambda kv: kv[0]):
            own = dict(m.named_parameters(recurse=False))
            kind = type(m).__name__
            for pname, p in sorted(own.items()):
                if id(p) in done:
                    continue
                done.add(id(p))
                if isinstance(m, nn.LayerNorm) or kind.endswith("RMSNorm"):
                    p.copy_(1 + 0.1 * rnd(p) if pname == "weight" else 0.1 * rnd(p))
                elif pname == "bias":
                    p.copy_(0.1 * rnd(p))
                elif isinstance(m, (nn.Linear, nn.Conv2d)) or kind == "Conv1D":
                    fan_in = p.shape[0] if kind == "Conv1D" else p[0].numel()
                    p.copy_(rnd(p) / math.sqrt(fan_in))
                else:  # embeddings, cls token, position tables
                    p.copy_(0.5 * rnd(p))
    return model


CONSTANTS = ("bias", "position_embeddings", "token_type_embeddings", "wpe", "cls_token")


def build(name, seed=0, attn="eager", bias_free=False):
    """The tiny model `name`, float32, eval, seeded; classes taken from the modeling module at call time.
    bias_free: every constant addend zeroed (biases, position / token-type tables, cls token) — the
    conservation check: CP-LRP is then exactly conservative, AttnLRP off only by its softmax rule."""
    model = _init(getattr(_MODULE[name], _MODEL_CLASS[name])(_config(name, attn)), seed).eval()
    if bias_free:
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if any(c in pname for c in CONSTANTS):
                    p.zero_()
    return model


class Logits(nn.Module):
    def __init__(self, model, name):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, x):
        out = self.model(pixel_values=x) if self.name == "vit" else self.model(inputs_embeds=x)
        return out.logits


def make_input(name, batch=2, seq=7, seed=0):
    g = torch.Generator().manual_seed(1000 + seed)
    shape = (batch, 3, 32, 32) if name == "vit" else (batch, seq, H)
    return torch.randn(shape, generator=g).numpy().astype(np.float32)


def export(name, path, opset=17, dynamo=False, seed=0, attn="eager"):
    """ONNX export of Logits(build(name)) (input "x", dynamic batch and, for text, seq) with `attn`
    attention ("eager" or "sdpa": torch's scaled_dot_product_attention, decomposed by the exporter)."""
    wrapper = Logits(build(name, seed, attn), name)
    x = torch.from_numpy(make_input(name, seed=seed))
    axes = {0: "batch"} if name == "vit" else {0: "batch", 1: "seq"}
    out_axes = {0: "batch", 1: "seq"} if name in LMS else {0: "batch"}
    kw = dict(input_names=["x"], output_names=["logits"], opset_version=opset)
    mu = transformers.masking_utils  # its vmap-built causal mask does not trace (TorchScript: unordered_map::at)
    with torch.no_grad(), _swap(mu, "sdpa_mask", _causal_mask if name in LMS else mu.sdpa_mask):
        if dynamo:
            dim = torch.export.Dim.AUTO
            dyn = {"x": {0: dim} if name == "vit" else {0: dim, 1: dim}}
            torch.onnx.export(wrapper, (x,), str(path), dynamo=True, dynamic_shapes=dyn, **kw)
        else:
            torch.onnx.export(
                wrapper, (x,), str(path), dynamo=False, dynamic_axes={"x": axes, "logits": out_axes}, **kw
            )
    return wrapper


def _causal_mask(batch_size, cache_position, kv_length, kv_offset=0, attention_mask=None, **kwargs):
    """transformers' boolean causal mask [b, 1, q, kv] without vmap, for tracing (no padding, no packing)."""
    assert attention_mask is None, "export of padded inputs is not supported"
    kv = torch.arange(kv_length, device=cache_position.device) + kv_offset
    return (kv[None, :] <= cache_position[:, None])[None, None].expand(batch_size, 1, -1, -1)


@contextlib.contextmanager
def _swap(obj, attr, value):
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def check_onnx(name, path, wrapper, seed=0):
    """max |ORT − torch| over two shapes (the export's and batch 1 / seq 5)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b, s in ((2, 7), (1, 5), (3, 11)):
        x = make_input(name, b, s, seed=seed + 7)
        with torch.no_grad():
            ref = wrapper(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


# ---------------------------------------------------------------- patch maps built from LXT's functions


def _act_forward(self, hidden_states):  # BertIntermediate / RobertaIntermediate / ViTIntermediate
    return identity_rule_implicit(self.intermediate_act_fn, self.dense(hidden_states))


def _pooler_forward(self, hidden_states):  # BertPooler: [CLS] → dense → tanh (identity rule)
    return identity_rule_implicit(self.activation, self.dense(hidden_states[:, 0]))


def _roberta_head_forward(self, features, **kwargs):  # RobertaClassificationHead: functional torch.tanh
    return self.out_proj(identity_rule_implicit(torch.tanh, self.dense(features[:, 0, :])))


def _ffn_chunk(self, x):  # DistilBERT FFN
    return self.lin2(identity_rule_implicit(self.activation, self.lin1(x)))


def _qkv_rule(mode, q, k, v):
    if mode == "attnlrp":
        return divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
    return stop_gradient(q), stop_gradient(k), v


def _sdp(q, k, v, additive_mask=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if additive_mask is not None:
        scores = scores + additive_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v), probs


def _bert_attention(mode):
    """Eager BertSelfAttention / RobertaSelfAttention forward (self-attention, absolute positions)."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        b, s, _ = hidden_states.shape
        heads = lambda t: t.view(b, s, self.num_attention_heads, self.attention_head_size).transpose(1, 2)  # noqa
        q, k, v = _qkv_rule(
            mode, heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states))
        )
        ctx, probs = _sdp(q, k, v, attention_mask)
        return ctx.transpose(1, 2).reshape(b, s, self.all_head_size), probs

    return forward


def _distil_attention(mode):
    def forward(self, query, key, value, mask, head_mask=None, output_attentions=False):
        b, s, _ = query.shape
        heads = lambda t: t.view(b, -1, self.n_heads, self.dim // self.n_heads).transpose(1, 2)  # noqa
        q, k, v = _qkv_rule(mode, heads(self.q_lin(query)), heads(self.k_lin(key)), heads(self.v_lin(value)))
        add = None
        if mask is not None:
            add = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(mask == 0, torch.finfo(q.dtype).min)
            add = add.view(b, 1, 1, -1)
        ctx, probs = _sdp(q, k, v, add)
        out = self.out_lin(ctx.transpose(1, 2).reshape(b, s, self.dim))
        return (out, probs) if output_attentions else (out,)

    return forward


def patch_map(name, mode, custom_bert=False):
    """The patch map for (name, mode): LXT's own where it exists, else built from LXT's functions."""
    norm = {nn.LayerNorm: partial(patch_method, layer_norm_forward), nn.Dropout: partial(patch_method, dropout_forward)}
    lxt_family = {"gpt2": lxt_models.gpt2, "llama": lxt_models.llama, "qwen2": lxt_models.qwen2}
    if name in lxt_family:
        return lxt_family[name].attnLRP if mode == "attnlrp" else lxt_family[name].cp_LRP
    if name == "bert" and mode == "attnlrp" and not custom_bert:
        return lxt_models.bert.attnLRP
    if name == "bert":
        m = modeling_bert
        return {
            **norm,
            m.BertIntermediate: partial(patch_method, _act_forward),
            m.BertPooler: partial(patch_method, _pooler_forward),
            m.BertSelfAttention: partial(patch_method, _bert_attention(mode)),
        }
    if name == "roberta":
        m = modeling_roberta
        return {
            **norm,
            m.RobertaIntermediate: partial(patch_method, _act_forward),
            m.RobertaClassificationHead: partial(patch_method, _roberta_head_forward),
            m.RobertaSelfAttention: partial(patch_method, _bert_attention(mode)),
        }
    if name == "distilbert":
        m = modeling_distilbert
        return {
            **norm,
            m.FFN: partial(patch_method, _ffn_chunk, method_name="ff_chunk"),
            m.MultiHeadSelfAttention: partial(patch_method, _distil_attention(mode)),
        }
    if name == "vit":
        m = modeling_vit
        return {
            **norm,
            m.ViTIntermediate: partial(patch_method, _act_forward),
            m: patch_attention if mode == "attnlrp" else patch_cp_attention,
        }
    raise KeyError(name)


@contextlib.contextmanager
def _patched(pmap):
    """monkey_patch(…, pmap) for the duration of the block, every target restored afterwards."""
    shared = modeling_utils.ALL_ATTENTION_FUNCTIONS
    saved = [(t, dict(vars(t))) for t in pmap] + [(shared, None)]
    shared_local = dict(shared._local_mapping)
    lxt.efficient.monkey_patch(None, pmap)
    try:
        yield
    finally:
        for target, before in saved[:-1]:
            now = vars(target)
            for key in [k for k in now if k not in before]:
                delattr(target, key)
            for key, value in before.items():
                if now.get(key, None) is not value and not key.startswith("__"):
                    setattr(target, key, value)
        shared._local_mapping.clear()
        shared._local_mapping.update(shared_local)


def select_targets(name, logits):
    """Classifier: argmax class per sample; LM: argmax token of the last position."""
    last = logits[:, -1, :] if name in LMS else logits
    return [int(t) for t in last.argmax(-1)]


def lxt_relevance(
    name, mode, x, target=None, dtype=torch.float64, seed=0, attn="eager", custom_bert=False, bias_free=False
):
    """LXT relevance x ⊙ x.grad for (name, mode): (R as numpy, targets, selected logits)."""
    assert mode in MODES, mode
    state = build(name, seed, bias_free=bias_free).state_dict()
    with _patched(patch_map(name, mode, custom_bert)):
        model = getattr(_MODULE[name], _MODEL_CLASS[name])(_config(name, attn))
        model.load_state_dict(state)
        wrapper = Logits(model.eval().to(dtype), name)
        xt = torch.as_tensor(np.asarray(x), dtype=dtype).clone().requires_grad_(True)
        logits = wrapper(xt)
        targets = select_targets(name, logits) if target is None else [int(t) for t in target]
        idx = torch.arange(xt.shape[0])
        chosen = logits[idx, -1, targets] if name in LMS else logits[idx, targets]
        chosen.sum().backward()
    rel = (xt * xt.grad).detach().numpy()
    return rel, targets, chosen.detach().numpy()


def conservation(rel, chosen):
    """|ΣR / logit − 1| per sample."""
    sums = rel.reshape(rel.shape[0], -1).sum(1)
    return np.abs(sums / chosen - 1)


def _fresh(name, mode, x, targets, seed=0):
    """The same relevance from a fresh Python process (nothing patched before)."""
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/x.npy", x)
        subprocess.run([sys.executable, __file__, "--one", name, mode, d, json.dumps(targets), str(seed)], check=True)
        return np.load(f"{d}/r.npy")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(NAMES))
    ap.add_argument("--out", default="lxt_hf_out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-isolation", action="store_true", help="compare with a fresh process per mode")
    ap.add_argument("--check-sdpa", action="store_true", help="LXT relevance with sdpa attention vs eager")
    ap.add_argument("--check-custom-bert", action="store_true", help="built BERT map vs LXT's own")
    ap.add_argument("--dynamo", action="store_true", help="also try torch.onnx.export(dynamo=True, opset 18)")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        name, mode, d, targets, seed = a.one
        rel, _, _ = lxt_relevance(name, mode, np.load(f"{d}/x.npy"), json.loads(targets), seed=int(seed))
        np.save(f"{d}/r.npy", rel)
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {}
    for name in a.models.split(","):
        wrapper = export(name, out / f"{name}.onnx", seed=a.seed)
        x = make_input(name, seed=a.seed)
        np.save(out / f"{name}_x.npy", x)
        with torch.no_grad():
            targets = select_targets(name, wrapper(torch.from_numpy(x)))
        info = {
            "targets": targets,
            "position": "last" if name in LMS else None,
            "onnx_max_abs_err": check_onnx(name, out / f"{name}.onnx", wrapper, a.seed),
            "seed": a.seed,
        }
        for mode in MODES:
            rel, _, chosen = lxt_relevance(name, mode, x, targets, seed=a.seed)
            np.save(out / f"{name}_{mode}.npy", rel)
            info[mode] = {"logits": chosen.tolist(), "conservation": conservation(rel, chosen).tolist()}
            rel0, _, chosen0 = lxt_relevance(name, mode, x, None, seed=a.seed, bias_free=True)
            info[mode]["conservation_bias_free"] = conservation(rel0, chosen0).tolist()
        if a.check_isolation:  # attnlrp again after cplrp ran in this process, vs a fresh process
            for mode in MODES:
                again = lxt_relevance(name, mode, x, targets, seed=a.seed)[0]
                fresh = _fresh(name, mode, x, targets, a.seed)
                info[mode]["same_process_vs_fresh"] = float(np.abs(again - fresh).max())
        if a.check_sdpa and name in ("bert", "gpt2", "llama", "qwen2", "vit"):
            for mode in MODES if name != "bert" else ("attnlrp",):
                rel = np.load(out / f"{name}_{mode}.npy")
                sd = lxt_relevance(name, mode, x, targets, seed=a.seed, attn="sdpa")[0]
                info[mode]["sdpa_vs_eager"] = float(np.abs(sd - rel).max())
        if a.check_custom_bert and name == "bert":
            mine = lxt_relevance(name, "attnlrp", x, targets, seed=a.seed, custom_bert=True)[0]
            info["attnlrp"]["custom_map_vs_lxt_map"] = float(np.abs(mine - np.load(out / "bert_attnlrp.npy")).max())
        if a.dynamo:
            try:
                w = export(name, out / f"{name}_dynamo18.onnx", opset=18, dynamo=True, seed=a.seed)
                info["dynamo18_max_abs_err"] = check_onnx(name, out / f"{name}_dynamo18.onnx", w, a.seed)
            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                info["dynamo18_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        record[name] = info
        print(name, json.dumps({k: v for k, v in info.items() if k != "targets"}), flush=True)
    path = out / "targets.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **record}, indent=1))


if __name__ == "__main__":
    main()
