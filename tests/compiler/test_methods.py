"""The gradient family (`--method`) against torch autograd on the same weights.

Each net is built in torch, exported with the legacy exporter (float32, dynamic batch) and compared in
float64: gradient, input×gradient, guided backprop and deconvnet (a ReLU whose backward the test sets),
integrated gradients (αₖ = k/m, the same baseline), smoothgrad with the noise fed as a graph input
(the same ε), at batch 1 and 4 from one compiled file; relative L2 error ≤ 1e-5. Also: the in-graph
noise (scale, seed, reproducibility), Gemm with transA, the checker, the CLI, and the error messages.
"""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import lrpc
from lrpc.cli import main
from lrpc.methods import parse_method
from nets import make_model, small_cnn, tensor

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the torch tests are skipped; the others run
    torch = None

TOL = 1e-5
RELU = {"mode": "gradient"}  # the backward of the test ReLU: gradient | guided | deconvnet


def rel_l2(actual, expected):
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def session(proto):
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


if torch is not None:
    torch.set_num_threads(2)

    class _ReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            if RELU["mode"] == "deconvnet":
                return g.clamp(min=0)
            g = g * (x > 0)
            return g.clamp(min=0) if RELU["mode"] == "guided" else g

    def relu(x):
        return torch.relu(x) if torch.onnx.is_in_onnx_export() else _ReLU.apply(x)

    class ConvNet(torch.nn.Module):
        """Conv-BN-ReLU, MaxPool, a residual sum of two convs, AvgPool, Linear-ReLU-Linear, Softmax."""

        shape = (3, 8, 8)

        def __init__(self):
            super().__init__()
            self.c1, self.bn = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
            self.c2, self.c3 = torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.Conv2d(6, 8, 1)
            self.fc1, self.fc2 = torch.nn.Linear(32, 16), torch.nn.Linear(16, 5)
            with torch.no_grad():
                self.bn.running_mean.uniform_(-0.3, 0.3), self.bn.running_var.uniform_(0.5, 2)
                self.bn.weight.uniform_(0.5, 1.5), self.bn.bias.uniform_(-0.2, 0.2)

        def logits(self, x):
            h = F.max_pool2d(relu(self.bn(self.c1(x))), 2)
            h = F.avg_pool2d(relu(self.c2(h)) + self.c3(h), 2)
            return self.fc2(relu(self.fc1(torch.flatten(h, 1))))

        def forward(self, x):
            return torch.softmax(self.logits(x), dim=1)

    class Activations(torch.nn.Module):
        """Every smooth activation with a derivative rule, fan-out, products and quotients of activations."""

        shape = (10,)

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.ModuleList(torch.nn.Linear(10, 10) for _ in range(11))
            self.prelu, self.out = torch.nn.PReLU(10), torch.nn.Linear(10, 4)
            with torch.no_grad():
                self.prelu.weight.uniform_(0.05, 0.4)

        def logits(self, x):
            fc = self.fc
            h = F.celu(torch.selu(F.elu(F.leaky_relu(fc[0](x), 0.1), 0.9)), 1.3)
            h = torch.tanh(fc[1](h)) + torch.sigmoid(fc[2](h)) - 0.5
            h = F.hardsigmoid(3 * fc[3](h)) * F.softplus(fc[4](h)) + F.relu6(2 * fc[5](h) + 3)
            h = self.prelu(fc[6](h)) - F.gelu(fc[7](h)) + 1.0 / (1 + torch.sqrt(F.softplus(fc[8](h))))
            h = torch.exp(-torch.abs(h)) + torch.log(torch.sigmoid(fc[9](h))) + torch.log_softmax(fc[10](h), dim=1)
            return self.out(torch.softmax(h, dim=1) * 10 + h)

        forward = logits

    class Routes(torch.nn.Module):
        """Pad (reflect), ConvTranspose, Resize (bilinear, nearest), Concat, Slice with steps, Split,
        Gather, ReduceMean/ReduceSum, Transpose, a reshape through a shape chain, Div and Mul by constants."""

        shape = (2, 6, 6)

        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(2, 4, 3, padding=1)
            self.ct = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
            self.fc = torch.nn.Linear(45 + 20, 5)

        def logits(self, x):
            h = torch.tanh(self.c1(F.pad(x, (1, 1, 1, 1), mode="reflect")))  # [N, 4, 8, 8]
            up = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = torch.cat([up, self.ct(h) + F.interpolate(h[:, :3], scale_factor=2)], 1)  # [N, 7, 16, 16]
            h = h[:, :, 1:15, ::2]  # [N, 7, 14, 8]
            h = h - h.mean(dim=1, keepdim=True)
            a, b = h.chunk(2, dim=2)
            h = F.max_pool2d(torch.sigmoid(a * 2 + b[:, :, :, [3, 1, 2, 0, 4, 5, 6, 7]]), 2)  # [N, 7, 3, 4]
            h = h.permute(0, 2, 3, 1)[:, :, :, 2:5]  # [N, 3, 4, 3]
            h = torch.cat([h, h[:, :, 1:2]], 2).reshape(h.shape[0], -1) / 3.0  # [N, 45]
            h = self.fc(torch.cat([h, h[:, 5:25]], 1))
            return h * 0.5 + h.sum(dim=1, keepdim=True)

        forward = logits


def build(kind, tmp_path, seed=0):
    torch.manual_seed(seed)
    net = kind().eval()
    path = tmp_path / f"{kind.__name__}.onnx"
    torch.onnx.export(
        net,
        (torch.randn(2, *kind.shape),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    return copy.deepcopy(net).double(), str(path)


def inputs(kind, batch, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *kind.shape)).astype(np.float32)


def torch_grad(net, points, target, relu="gradient", probs=False):
    """∂ score[n, target[n]] / ∂ points[n] in float64 (score: logits, or probabilities)."""
    RELU["mode"] = relu
    try:
        x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
        y = net.logits(x)
        y = torch.softmax(y, dim=1) if probs else y
        (g,) = torch.autograd.grad(y.gather(1, torch.as_tensor(target)[:, None]).sum(), x)
    finally:
        RELU["mode"] = "gradient"
    return g.numpy()


def reference(net, x, method, noise=None, probs=False, baseline=None):
    m = parse_method(method)
    with torch.no_grad():
        target = net.logits(torch.tensor(x, dtype=torch.float64)).argmax(1).numpy()
    x = x.astype(np.float64)
    if m.path is None:
        g = torch_grad(net, x, target, m.relu, probs)
        return x * g if m.times_input else g
    if m.path == "integrated":
        steps, x0 = m.get("steps"), (baseline.astype(np.float64) if m.get("baseline_input") else m.get("baseline"))
        alphas = (np.arange(1, steps + 1) / steps).reshape(-1, *[1] * x.ndim)
        points = x0 + alphas * (x - x0)
    else:
        points = x + noise
    k = len(points)
    g = torch_grad(net, points.reshape(-1, *x.shape[1:]), np.tile(target, k)).reshape(points.shape).mean(0)
    return g * (x - x0) if m.path == "integrated" else g


METHODS = [
    "gradient",
    "inputxgradient",
    "guidedbackprop",
    "deconvnet",
    "integratedgradients:steps=8,baseline=0.25",
    "integratedgradients:steps=8,baseline_input=1",
    "smoothgrad:samples=5,noise_input=1",
]


def check_against_torch(kind, method, tmp_path, probs=False):
    net, path = build(kind, tmp_path)
    sess = session(lrpc.compile(path, method=method, keep_output_activation=probs))
    errors = []
    for batch in (1, 4):
        x = inputs(kind, batch)
        feed, noise, baseline = {"x": x}, None, None
        if "noise_input" in method:
            noise = np.random.default_rng(2).normal(0, 0.1, (5, *x.shape)).astype(np.float32)
            feed["noise"] = noise
        if "baseline_input" in method:  # a different baseline per sample
            baseline = np.random.default_rng(3).uniform(-0.5, 0.5, x.shape).astype(np.float32)
            feed["baseline"] = baseline
        y, attribution = sess.run(None, feed)
        with torch.no_grad():
            np.testing.assert_allclose(y, net(torch.tensor(x, dtype=torch.float64)).numpy(), rtol=1e-4, atol=1e-5)
        errors.append(rel_l2(attribution, reference(net, x, method, noise, probs, baseline)))
    assert max(errors) <= TOL, errors


@pytest.mark.torch
@pytest.mark.parametrize("method", METHODS)
def test_conv_net_matches_torch(method, tmp_path):
    pytest.importorskip("torch")
    check_against_torch(ConvNet, method, tmp_path)


@pytest.mark.torch
@pytest.mark.parametrize("method", ["gradient", "integratedgradients:steps=4"])
def test_activations_match_torch(method, tmp_path):
    pytest.importorskip("torch")
    check_against_torch(Activations, method, tmp_path)


@pytest.mark.torch
@pytest.mark.parametrize("method", ["gradient", "guidedbackprop", "smoothgrad:samples=5,noise_input=1"])
def test_routing_ops_match_torch(method, tmp_path):
    pytest.importorskip("torch")
    check_against_torch(Routes, method, tmp_path)


@pytest.mark.torch
def test_keep_output_activation_differentiates_the_probability(tmp_path):
    pytest.importorskip("torch")
    check_against_torch(ConvNet, "gradient", tmp_path, probs=True)


# ----------------------------------------------------------------------------------------------------
# without torch: the averaged methods against lrpc's own gradient at their points, noise, errors


def gradient_at(model, points, target):
    """lrpc's plain gradient of `model` at each row of `points` (target: int64 per row)."""
    sess = session(lrpc.compile(model, method="gradient", target="input"))
    return sess.run(None, {"x": points.astype(np.float32), "target": target})[-1]


@pytest.mark.parametrize("batch", [1, 3])
def test_integrated_gradients_average_the_gradient_along_the_path(batch):
    x = np.random.default_rng(0).standard_normal((batch, 2, 8, 8)).astype(np.float32)
    target = np.arange(batch, dtype=np.int64) % 5
    ig = session(lrpc.compile(small_cnn(), method="ig:steps=6,baseline=-0.5", target="input"))
    attribution = ig.run(None, {"x": x, "target": target})[-1]
    alphas = (np.arange(1, 7) / 6).reshape(-1, 1, 1, 1, 1)
    points = (-0.5 + alphas * (x + 0.5)).reshape(-1, *x.shape[1:])
    grads = gradient_at(small_cnn(), points, np.tile(target, 6)).reshape(6, *x.shape)
    np.testing.assert_allclose(attribution, (x + 0.5) * grads.mean(0), rtol=1e-5, atol=1e-6)


def test_smoothgrad_with_fed_noise_averages_the_gradient_at_the_noisy_inputs():
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    noise = np.random.default_rng(1).normal(0, 0.3, (3, *x.shape)).astype(np.float32)
    sg = session(lrpc.compile(small_cnn(), method="smoothgrad:samples=3,noise_input=1", target="mask"))
    mask = np.random.default_rng(2).uniform(0, 1, (2, 5)).astype(np.float32)
    attribution = sg.run(None, {"x": x, "mask": mask, "noise": noise})[-1]
    # the gradient of Σ mask ⊙ logits is Σ_c mask[c] ⋅ ∇ logit_c
    grads = sum(
        mask[None, :, c, None, None, None]
        * gradient_at(small_cnn(), (x + noise).reshape(-1, 2, 8, 8), np.full(6, c, np.int64)).reshape(noise.shape)
        for c in range(5)
    )
    np.testing.assert_allclose(attribution, grads.mean(0), rtol=1e-5, atol=1e-6)


def square_model():
    """y = x ⊙ x: the gradient of Σ y is 2x, so smoothgrad's result minus 2x shows the noise."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"], name="square")]
    return make_model(nodes, [tensor("x", ["n", 4000])], [tensor("y", ["n", 4000])], {})


def test_in_graph_noise_scale_seed_and_sessions():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4000)).astype(np.float32) * np.array([[1], [3], [0.5]], np.float32)
    proto = lrpc.compile(square_model(), method="smoothgrad:samples=2,noise=0.2,seed=7", target="all")
    # two samples, the last noise-free: 1/2 (2(x + ε₁) + 2x) − 2x = ε₁ ~ N(0, σ²), σ = 0.2·(max x − min x) per sample
    eps = session(proto).run(None, {"x": x})[-1] - 2 * x
    sigma = 0.2 * (x.max(1) - x.min(1))
    np.testing.assert_allclose(eps.std(1), sigma, rtol=0.05)
    assert np.all(np.abs(eps.mean(1)) < 0.1 * sigma)
    again = session(proto)  # a new session draws the same noise; a later run draws fresh noise
    first, second = (again.run(None, {"x": x})[-1] - 2 * x for _ in range(2))
    np.testing.assert_array_equal(first, eps)
    assert not np.allclose(second, eps)
    other = lrpc.compile(square_model(), method="smoothgrad:samples=2,noise=0.2,seed=8", target="all")
    assert not np.allclose(session(other).run(None, {"x": x})[-1] - 2 * x, eps)
    one = lrpc.compile(square_model(), method="smoothgrad:samples=1", target="all")
    np.testing.assert_allclose(session(one).run(None, {"x": x})[-1], 2 * x, rtol=1e-6)


def test_two_inputs_get_their_own_noise_input_and_attribution():
    rng = np.random.default_rng(0)
    init = {
        "wa": rng.standard_normal((4, 6)).astype(np.float32),
        "wb": rng.standard_normal((4, 6)).astype(np.float32),
        "w": rng.standard_normal((6, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["a", "wa"], ["ha"]),
        helper.make_node("Gemm", ["b", "wb"], ["hb"]),
        helper.make_node("Add", ["ha", "hb"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "w"], ["y"]),
    ]
    model = make_model(nodes, [tensor("a", ["n", 4]), tensor("b", ["n", 4])], [tensor("y", ["n", 3])], init)
    sess = session(lrpc.compile(model, method="smoothgrad:samples=2,noise_input=1", target=1))
    assert [i.name for i in sess.get_inputs()] == ["a", "b", "noise_a", "noise_b"]
    a, b = rng.standard_normal((2, 2, 4)).astype(np.float32)
    na, nb = rng.normal(0, 0.1, (2, 2, 2, 4)).astype(np.float32)
    _, ra, rb = sess.run(None, {"a": a, "b": b, "noise_a": na, "noise_b": nb})
    derivative = 1 - np.tanh((a + na) @ init["wa"] + (b + nb) @ init["wb"]) ** 2  # [2, n, 6]
    common = derivative * init["w"][:, 1]
    np.testing.assert_allclose(ra, (common @ init["wa"].T).mean(0), rtol=1e-5)
    np.testing.assert_allclose(rb, (common @ init["wb"].T).mean(0), rtol=1e-5)


def test_gemm_with_trans_a_alpha_and_a_constant_divisor():
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("Gemm", ["xt", "w"], ["g"], transA=1, alpha=0.5),
        helper.make_node("Div", ["g", "c"], ["y"]),
    ]
    model = make_model(nodes, [tensor("x", ["n", 4])], [tensor("y", ["n", 3])], {"w": w, "c": np.float32(4.0)})
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    rel = session(lrpc.compile(model, method="inputxgradient", target=2)).run(None, {"x": x})[-1]
    np.testing.assert_allclose(rel, x * 0.5 * w[:, 2] / 4.0, rtol=1e-6)


def test_split_expand_tile_pow_sum_and_matmul_match_finite_differences():
    """A float64 graph of the routing/arithmetic ops the torch nets do not export, against central differences."""
    f64 = onnx.TensorProto.DOUBLE
    init = {
        "split": np.array([1, 3]),
        "shape": np.array([1, 3, 3]),
        "reps": np.array([1, 1, 2]),
        "two": 2.0,
        "w": np.random.default_rng(0).standard_normal((3, 8)),
        "axis": np.array([1]),
    }
    nodes = [
        helper.make_node("Split", ["x", "split"], ["s1", "s2"], axis=2),
        helper.make_node("Expand", ["s1", "shape"], ["e"]),
        helper.make_node("Pow", ["s2", "two"], ["p"]),
        helper.make_node("Sum", ["e", "p", "s2"], ["s"]),
        helper.make_node("MatMul", ["s", "w"], ["m"]),
        helper.make_node("Tanh", ["x"], ["t"]),
        helper.make_node("Tile", ["t", "reps"], ["tt"]),
        helper.make_node("Add", ["m", "tt"], ["z"]),
        helper.make_node("ReduceSum", ["z", "axis"], ["y"], keepdims=0),
    ]
    model = make_model(nodes, [tensor("x", ["n", 3, 4], f64)], [tensor("y", ["n", 8], f64)], init)
    x = np.random.default_rng(1).uniform(0.5, 1.5, (2, 3, 4))
    y_of = session(model)
    got = session(lrpc.compile(model, method="gradient", target=5)).run(None, {"x": x})[-1]
    want = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = 1e-6
        want[i] = (y_of.run(None, {"x": x + d})[0] - y_of.run(None, {"x": x - d})[0])[i[0], 5] / 2e-6
    assert rel_l2(got, want) < 1e-7


def test_metadata_names_the_method_and_the_runtime_reads_it():
    from lrpc_runtime.metadata import parse_metadata

    proto = lrpc.compile(small_cnn(), method="IG:steps=4")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["lrpc.method"] == meta["lrpc.rule"] == "integratedgradients:steps=4,baseline=0"
    assert parse_metadata(meta).rule == "integratedgradients:steps=4,baseline=0"
    assert "lrpc.method" not in {p.key for p in lrpc.compile(small_cnn(), method="lrp").metadata_props}


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gradients", "unknown method 'gradients'; known methods: gradient, inputxgradient, guidedbackprop"),
        ("gradient:eps=1", "method 'gradient' has no parameter 'eps' (its parameters: none)"),
        (
            "ig:step=3",
            "method 'integratedgradients' has no parameter 'step' (its parameters: steps, baseline, baseline_input)",
        ),
        ("ig:steps", "method 'integratedgradients': write parameters as steps=VALUE"),
        ("ig:steps=0", "parameter steps must be ≥ 1, got 0"),
        ("smoothgrad:samples=2.5", "parameter samples needs a whole number, got '2.5'"),
        ("smoothgrad:noise=lots", "parameter noise needs a number, got 'lots'"),
        ("smoothgrad:noise=-0.1", "parameter noise must be ≥ 0"),
        ("smoothgrad:noise_input=2", "noise_input is 0 (a constant in the graph) or 1 (a graph input)"),
        ("smoothgrad:noise_input=1,seed=3,noise=0.2", "noise= and seed= have no effect there"),
        (
            "ig:baseline_input=1,baseline=0.5",
            "with baseline_input=1 the graph takes the fed tensor as it is; baseline= has no effect there",
        ),
    ],
)
def test_bad_method_specs_are_explained(spec, message):
    with pytest.raises(lrpc.LrpcError, match=None) as e:
        parse_method(spec)
    assert message in str(e.value)


def test_specs_are_normalized():
    assert parse_method("Integrated_Gradients:steps=32").spec == "integratedgradients:steps=32,baseline=0"
    assert parse_method("smoothgrad").spec == "smoothgrad:samples=20,noise=0.1,seed=0"
    assert parse_method("smoothgrad:noise_input=1,samples=4").spec == "smoothgrad:samples=4,noise_input=1"
    assert parse_method("guided-backprop").relu == "guided" and parse_method("deconvnet").relu == "deconvnet"


def one_op_model(op_nodes, shape_in=("n", 4), shape_out=("n", 4), init=None):
    return make_model(op_nodes, [tensor("x", list(shape_in))], [tensor("y", list(shape_out))], init or {})


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (
            lambda: one_op_model([helper.make_node("Sin", ["x"], ["y"], name="wave")]),
            dict(method="gradient"),
            "no gradient rule for node 'wave' (Sin); supported ops: Abs, Add",
        ),
        (
            lambda: one_op_model(
                [helper.make_node("Reshape", ["x", "s"], ["y"], name="fixed")], init={"s": np.array([2, 4])}
            ),
            dict(method="ig"),
            "node 'fixed' (Reshape) reshapes to a fixed batch of 2",
        ),
        (
            lambda: small_cnn(),
            dict(method="gradient", rule="epsilon"),
            "--method gradient computes gradients: drop --rule",
        ),
        (
            lambda: make_model(
                [helper.make_node("Relu", ["noise"], ["y"])], [tensor("noise", ["n", 4])], [tensor("y", ["n", 4])], {}
            ),
            dict(method="smoothgrad:noise_input=1"),
            "the model already has an input named 'noise'",
        ),
    ],
)
def test_method_errors_name_the_problem(model, kwargs, message):
    with pytest.raises(lrpc.LrpcError) as e:
        lrpc.compile(model(), **kwargs)
    assert message in str(e.value)


def test_cli_compiles_a_method(tmp_path, capsys):
    model, out = tmp_path / "m.onnx", tmp_path / "ig.onnx"
    onnx.save(small_cnn(), model)
    assert main(["compile", str(model), "--method", "integratedgradients:steps=4", "-o", str(out)]) == 0
    assert "method integratedgradients:steps=4,baseline=0" in capsys.readouterr().out
    probs, attribution = session(onnx.load(out)).run(None, {"x": np.ones((2, 2, 8, 8), np.float32)})
    assert probs.shape == (2, 5) and attribution.shape == (2, 2, 8, 8)
    assert main(["compile", str(model), "--method", "saliency", "-o", str(out)]) == 2
    assert "unknown method 'saliency'" in capsys.readouterr().err
