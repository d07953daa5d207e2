"""Running a compiled model in onnxruntime and comparing it with the oracle (relative L2 per sample)."""

from __future__ import annotations

import numpy as np

from .dag import explain, well_conditioned


def session(proto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(sess, X, target=None, dtype=np.float32):
    """(outputs by name) of a compiled model on X, with the `target` input if it has one."""
    feeds = {"x": np.asarray(X, dtype)}
    if any(i.name == "target" for i in sess.get_inputs()):
        feeds["target"] = np.asarray(target, np.int64)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def rel_err_per_sample(actual, expected):
    """||actual - expected|| / ||expected|| for each sample (L2 over all non-batch axes)."""
    a = np.asarray(actual, np.float64).reshape(len(actual), -1)
    e = np.asarray(expected, np.float64).reshape(len(expected), -1)
    num = np.linalg.norm(a - e, axis=1)
    den = np.linalg.norm(e, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def assert_rel_close(actual, expected, tol, what="relevance"):
    err = rel_err_per_sample(actual, expected)
    assert np.all(err <= tol), f"{what}: relative L2 error per sample {err} exceeds {tol:g}"


def softmax(y):
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(got, output, net, X, spec, target=None, tol=1e-5, model_output=None):
    """Compare a compiled model's outputs `got` (by name; `output` the model's) with the oracle on X:
    the model output at min(tol, 1e-5) (model_output(y) maps the oracle's explained values to it, e.g.
    a softmax), then the relevance at `tol` on inputs that must be well conditioned. Returns (relevance
    from lrpc, oracle relevance, oracle explained values)."""
    y, R = explain(net, X, spec, None, target)
    expected = y if model_output is None else model_output(y)
    assert_rel_close(got[output], expected, min(tol, 1e-5), what="model output (the oracle's forward pass)")
    assert np.all(well_conditioned(y, target)), "ill-conditioned explained output: use pick_inputs"
    # (an all-zero oracle relevance is legitimate, e.g. z+ explaining a unit with no positive
    # contribution; rel_err_per_sample then demands exactly zero from lrpc too)
    assert got["relevance"].shape == np.shape(X)
    assert_rel_close(got["relevance"], R, tol)
    return got["relevance"], R, y
