"""Relevance rules, one module per family; importing this package fills the table."""

from . import elementwise, linear, pooling, shape  # noqa: F401
from .table import RULES, relevance_rule, supported_ops  # noqa: F401
