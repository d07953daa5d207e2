"""Relevance rules, one module per rule family; importing this package fills the table."""

from . import (attention, combine, elementwise, gates, linear, norms, pooling, quantized,  # noqa: F401
               reduce, resample, routing, shape)
from .table import RULES, relevance_rule, supported_ops  # noqa: F401
