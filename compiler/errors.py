"""The one exception lrpc raises for bad input: the CLI prints it and exits non-zero."""


class LrpcError(Exception):
    """A problem with the user's model or options, phrased as what happened and what to do."""


def node_label(node) -> str:
    """`'conv1' (Conv)` — how errors name a node."""
    return f"'{node.name or '<unnamed>'}' ({node.op_type})"


def printable(text: str) -> str:
    """`text` with control characters (escape sequences in a node name, …) shown as \\x1b etc., so a model
    cannot write to the user's terminal through an error line; newlines and tabs kept."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def root_cause(error: BaseException) -> BaseException:
    """The innermost cause of a chain of wrapping errors (onnx_ir wraps once per graph, node, attribute)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def one_line(error: BaseException) -> str:
    """The error's text on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(error).split())
