"""Issue 18's wrong exit classes and silently wrong results: sizes and numbers from a file or a flag are
checked before anything is allocated or compiled, the model's own names never clash with lrpc's, and a
per-call target outside the classes fails the run instead of returning an all-zero map."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import lrpc
from lrpc.cli import main
from nets import make_model, small_cnn, tensor

X = np.random.default_rng(0).random((3, 2, 8, 8), dtype=np.float32)


def run_cli(capsys, *args) -> tuple[int, str]:
    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def relevance_of(proto_or_path, feeds) -> np.ndarray:
    model = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    return path


@pytest.mark.parametrize(
    "option, value",
    [
        ("--rule", "epsilon:eps=nan"),
        ("--rule", "epsilon:eps=inf"),
        ("--rule", "alphabeta:alpha=nan,beta=1"),
        ("--rule", "gamma:gamma=-inf"),
        ("--composite", "EpsilonGammaBox:low=nan,high=3"),
        ("--rule-map", "conv=epsilon:eps=nan"),
        ("--method", "integratedgradients:steps=4,baseline=nan"),
        ("--method", "smoothgrad:samples=4,noise=inf"),
    ],
)
def test_a_parameter_that_is_not_finite_is_refused(capsys, tmp_path, model, option, value):
    status, err = run_cli(capsys, "compile", model, option, value, "-o", tmp_path / "out.onnx")
    assert status == 2 and "must be a finite number" in err, err
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--rule", "", "--rule is empty"),
        ("--composite", " ", "--composite is empty"),
        ("--method", "integratedgradients:steps=1e9", "steps must be ≤ 4096"),
        ("--method", "smoothgrad:samples=100000", "samples must be ≤ 4096"),
    ],
)
def test_an_empty_or_runaway_option_is_an_error_not_a_crash(capsys, tmp_path, model, option, value, message):
    status, err = run_cli(capsys, "compile", model, option, value, "-o", tmp_path / "out.onnx")
    assert status == 2 and message in err, err


def huge_weight_without_data():
    m = small_cnn()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.dims[:] = [10**6, 10**6, 3, 3]
    return m


def constant_of_huge_shape():
    value = numpy_helper.from_array(np.array([1.0], np.float32))
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["big"], name="big", value=value),
        helper.make_node("Add", ["x", "big"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [tensor("x", ["n", 10**6])],
        [tensor("y", ["n", 10**6])],
        [numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "s")],
    )
    return _opset17(graph)


def if_node():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [tensor("t", ["n", 4])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [tensor("e", ["n", 4])])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)
    return _opset17(
        helper.make_graph(
            [node],
            "g",
            [tensor("x", ["n", 4])],
            [tensor("y", ["n", 4])],
            [numpy_helper.from_array(np.array(True), "c")],
        )
    )


def gather_out_of_range():
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], name="pick", axis=1),
        helper.make_node("MatMul", ["g", "w"], ["y"], name="fc"),
    ]
    return make_model(
        nodes,
        [tensor("x", ["n", 4])],
        [tensor("y", ["n", 3])],
        {"idx": np.array([0, 9], np.int64), "w": np.ones((2, 3), np.float32)},
    )


def _opset17(graph):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize(
    "make, message",
    [
        (huge_weight_without_data, "initializer 'w1' holds 0 values, but its dims [1000000, 1000000, 3, 3] take"),
        (constant_of_huge_shape, "'big' (ConstantOfShape) computes a constant of 1e+12 elements"),
        (if_node, "'branch' (If): control flow (If, Loop, Scan) has no relevance rule"),
        (gather_out_of_range, "'pick' (Gather): index 9 on axis 1 of size 4"),
    ],
)
def test_a_model_that_cannot_run_is_refused_before_allocating(capsys, tmp_path, make, message):
    onnx.save(make(), tmp_path / "m.onnx")
    status, err = run_cli(capsys, "compile", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx")
    assert status == 2 and message in err, err


def test_a_name_that_is_not_utf8_is_named_as_such(capsys, tmp_path):
    (tmp_path / "m.onnx").write_bytes(small_cnn().SerializeToString().replace(b"probs", b"pr\xffbs"))
    status, err = run_cli(capsys, "compile", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx")
    assert status == 2 and "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff" in err, err


def test_a_folder_is_not_called_missing(capsys, tmp_path):
    status, err = run_cli(capsys, "compile", tmp_path, "-o", tmp_path / "out.onnx")
    assert status == 2 and "is a folder, not a model file" in err and "no such file" not in err, err


def test_an_explained_file_is_not_compiled_again(capsys, tmp_path, model):
    lrpc.compile(str(model), output=tmp_path / "explained.onnx")
    status, err = run_cli(capsys, "compile", tmp_path / "explained.onnx", "-o", tmp_path / "again.onnx")
    assert status == 2 and "this is an explained file" in err, err


def renamed(proto: onnx.ModelProto, names: dict) -> onnx.ModelProto:
    for node in proto.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    return proto


def test_tensors_named_like_lrpcs_own_change_nothing():
    reference = lrpc.compile(small_cnn(), rule="epsilon")
    ours = [n.output[0] for n in reference.graph.node if n.output[0].startswith("lrp/")][:3]
    ours += [t.name for t in reference.graph.initializer if t.name.startswith("lrp/")][:2]
    inner = ["c1", "r1", "p1", "c2", "r2"]
    clashing = lrpc.compile(renamed(small_cnn(), dict(zip(inner, ours))), rule="epsilon")
    assert clashing.graph.output[1].name == "relevance"
    np.testing.assert_array_equal(
        relevance_of(clashing, {"x": X})["relevance"], relevance_of(reference, {"x": X})["relevance"]
    )


def test_an_inner_tensor_named_relevance_is_renamed_and_an_output_refused():
    reference = relevance_of(lrpc.compile(small_cnn(), rule="epsilon"), {"x": X})["relevance"]
    inner = relevance_of(lrpc.compile(renamed(small_cnn(), {"c1": "relevance"}), rule="epsilon"), {"x": X})
    np.testing.assert_array_equal(inner["relevance"], reference)
    model = small_cnn()
    model.graph.output[0].name = "relevance"
    renamed(model, {"probs": "relevance"})
    with pytest.raises(lrpc.LrpcError, match="has an input or output named 'relevance'"):
        lrpc.compile(model, rule="epsilon")


def two_inputs(first: str, second: str):
    """y = W·a + W·b for inputs named `first` and `second`, no bias: LRP-0 conserves over both."""
    w = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", [first, "w"], ["a"]),
        helper.make_node("Gemm", [second, "w"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    return make_model(nodes, [tensor(first, ["n", 4]), tensor(second, ["n", 4])], [tensor("y", ["n", 3])], {"w": w})


@pytest.mark.parametrize("first, second", [("target", "x"), ("x", "mask")])
def test_inputs_named_target_or_mask_are_explained_like_any_other(first, second):
    proto = lrpc.compile(two_inputs(first, second), rule="zero", target=1)
    rng = np.random.default_rng(2)
    feeds = {first: rng.random((2, 4), dtype=np.float32), second: rng.random((2, 4), dtype=np.float32)}
    out = relevance_of(proto, feeds)
    assert {f"relevance_{first}", f"relevance_{second}"} <= set(out)
    total = out[f"relevance_{first}"].sum(1) + out[f"relevance_{second}"].sum(1)
    np.testing.assert_allclose(total, out["y"][:, 1], rtol=1e-5)
    assert np.abs(out[f"relevance_{first}"]).sum() > 0 and np.abs(out[f"relevance_{second}"]).sum() > 0


@pytest.mark.parametrize("bad", [5, -1, -6, 10**12])
def test_a_target_outside_the_classes_fails_the_run(bad):
    """The graph checks `target` itself, for runtimes without lrpc's Explainer (onnxruntime, Triton)."""
    proto = lrpc.compile(small_cnn(), rule="epsilon", target="input")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = relevance_of(lrpc.compile(small_cnn(), rule="epsilon", target=4), {"x": X})["relevance"]
    np.testing.assert_array_equal(session.run(["relevance"], {"x": X, "target": np.array([4, 4, 4])})[0], fixed)
    with pytest.raises(Exception, match="out of data bounds"):
        session.run(None, {"x": X, "target": np.array([0, bad, 4])})


def test_escape_sequences_in_names_do_not_reach_the_terminal(capsys, tmp_path):
    m = small_cnn()
    m.graph.node[0].op_type, m.graph.node[0].name = "Frobnicate", "evil\x1b[31mRED"
    onnx.save(m, tmp_path / "m.onnx")
    status, err = run_cli(capsys, "compile", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx")
    assert status == 2 and "evil\\x1b[31mRED" in err and "\x1b" not in err, err


def test_the_api_never_replaces_the_source_unasked(tmp_path, model):
    before = model.read_bytes()
    with pytest.raises(lrpc.LrpcError, match="is the source model"):
        lrpc.compile(str(model), output=model)
    assert model.read_bytes() == before
    other = tmp_path / "notes.onnx"
    shutil.copy(model, other)
    with pytest.raises(lrpc.LrpcError, match="is not an explained file"):
        lrpc.compile(str(model), output=other)
    lrpc.compile(str(model), output=other, overwrite=True)
    assert "lrpc.relevance" in {p.key for p in onnx.load(other).metadata_props}


def test_verify_draws_float_samples_for_a_model_input_named_target():
    proto = lrpc.compile(two_inputs("target", "x"), rule="zero", target=1)
    report = lrpc.verify(proto, samples=2)
    assert report.passed, report.text()


def test_verify_does_not_call_a_folder_missing(capsys, tmp_path):
    status, err = run_cli(capsys, "verify", tmp_path)
    assert status == 2 and "is a folder, not an explained ONNX file" in err, err


def test_a_tolerance_that_is_not_a_positive_number_names_its_option(capsys, tmp_path, model):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", str(model), "--verify", "--verify-tolerance", "nan", "-o", str(tmp_path / "out.onnx")])
    assert exit_.value.code == 2 and "argument --verify-tolerance: needs a finite number > 0" in capsys.readouterr().err


def _npy_header(path, shape, held: int) -> None:
    """A float32 .npy whose header says `shape` and whose file holds `held` bytes of data (sparse)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
        f.truncate(f.tell() + held)


@pytest.mark.parametrize(
    "shape, held, message",
    [
        ((10**9, 2, 8, 8), 100, "its header claims float32 of shape [1000000000, 2, 8, 8]"),
        ((2**24, 2, 8, 8), 2**24 * 2 * 8 * 8 * 4, "8.0 GiB, more than the 2.0 GiB verify reads at once"),
    ],
)
def test_verify_inputs_are_sized_from_their_header_before_reading(capsys, tmp_path, model, shape, held, message):
    explained = tmp_path / "explained.onnx"
    lrpc.compile(str(model), output=explained)
    _npy_header(tmp_path / "x.npy", shape, held)
    status, err = run_cli(capsys, "verify", explained, "--inputs", tmp_path / "x.npy")
    assert status == 2 and message in err, err
