"""The one exception lrpc raises for bad input: the CLI prints it and exits non-zero."""


class LrpcError(Exception):
    """A problem with the user's model or options, phrased as what happened and what to do."""


def node_label(node) -> str:
    """`'conv1' (Conv)` — how errors name a node."""
    return f"'{node.name or '<unnamed>'}' ({node.op_type})"
