"""Exceptions raised by :mod:`lrpc_runtime`.

Both classes subclass a builtin exception so callers that do not know about
lrpc can still catch them generically::

    >>> from lrpc_runtime.errors import DeviceUnavailableError
    >>> issubclass(DeviceUnavailableError, RuntimeError)
    True
"""

from __future__ import annotations

__all__ = ["DeviceUnavailableError", "NotExplainedError"]


class DeviceUnavailableError(RuntimeError):
    """The requested execution device (CUDA) cannot be used by onnxruntime.

    Raised instead of silently running on the CPU.

    Example::

        >>> try:
        ...     raise DeviceUnavailableError("CUDA was requested ...")
        ... except RuntimeError as err:
        ...     print(type(err).__name__)
        DeviceUnavailableError
    """


class NotExplainedError(ValueError):
    """The ONNX file is not an explained graph produced by ``lrpc compile``.

    Raised when the ``lrpc.*`` metadata entries are missing or malformed, or
    do not match the graph's inputs and outputs.

    Example::

        >>> issubclass(NotExplainedError, ValueError)
        True
    """
