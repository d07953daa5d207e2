"""Preparation and canonization passes, run in order before lowering.

Every pass keeps the forward output of the model identical; each is an onnx_ir in-place pass
returning `PassResult(model, modified)`.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from .avgpool_to_conv import AveragePoolToDepthwiseConvPass
from .check_layers import CheckLayersPass
from .check_model import CheckModelPass
from .fold_batchnorm import FoldBatchNormPass
from .fold_channel_affine import FoldChannelAffinePass
from .fold_constants import FoldConstantsPass
from .input_normalization import RecordInputNormalizationPass
from .mark_static import MarkStaticPass
from .matmul_add_to_gemm import MatMulAddToGemmPass
from .recognize_products import RecognizeProductsPass
from .remove_identity import RemoveIdentityPass
from .shape_inference import StrictShapeInferencePass
from .sort import SortPass

_ShapeInference = StrictShapeInferencePass


def pipeline() -> list[ir.passes.PassBase]:
    return [
        common.RemoveInitializersFromInputsPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        SortPass(),
        CheckModelPass(),
        RemoveIdentityPass(),
        _ShapeInference(),
        CheckLayersPass(),
        FoldConstantsPass(),  # with shape inference, to a fixpoint
        MarkStaticPass(),
        RecognizeProductsPass(),
        AveragePoolToDepthwiseConvPass(),
        FoldBatchNormPass(),
        FoldChannelAffinePass(),
        MatMulAddToGemmPass(),
        RecordInputNormalizationPass(),
        _ShapeInference(),
        common.RemoveUnusedNodesPass(),
        SortPass(),
    ]


def prepare(model: ir.Model, log=None) -> ir.Model:
    """Run every pass in order; `log(line)` is told what each of lrpc's passes changed."""
    for p in pipeline():
        modified = p.call(model).modified
        changes = getattr(p, "changes", [])
        name = type(p).__name__.lstrip("_").removesuffix("Pass")
        if log is not None and type(p).__module__.startswith(__name__) and not isinstance(p, _ShapeInference):
            for line in changes if changes else [None] if modified else []:
                log(f"{name}: {line}" if line else name)
    return model
