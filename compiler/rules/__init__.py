"""Relevance rules, one module per rule family; importing this package fills the table."""

from . import (  # noqa: F401  (each module registers its rules)
    attention,
    combine,
    elementwise,
    gates,
    linear,
    norms,
    pooling,
    quantized,
    reduce,
    resample,
    routing,
    shape,
)
from .table import RULES, relevance_rule, supported_ops  # noqa: F401
