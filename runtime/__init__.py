"""lrpc_runtime: run explained ONNX graphs with onnxruntime.

Production side of lrpc. It depends only on numpy and onnxruntime (Pillow is
imported lazily by :func:`save_heatmap`); it never imports onnx or the
compiler.

Example::

    >>> from lrpc_runtime import Explainer, save_heatmap      # doctest: +SKIP
    >>> ex = Explainer("digits.explained.onnx")              # doctest: +SKIP
    >>> result = ex.explain(images)                          # doctest: +SKIP
    >>> save_heatmap("r0.png", result.relevance_map[0], image=images[0])  # doctest: +SKIP

Files in, heatmaps out (what ``lrpc explain`` runs)::

    >>> from lrpc_runtime import explain_files                # doctest: +SKIP
    >>> rows = explain_files("digits.explained.onnx", ["digits/"], "heatmaps/")  # doctest: +SKIP

The same on a Ray cluster, one session per actor (``pip install "lrpc[ray]"``)::

    >>> rows = explain_files_ray("digits.explained.onnx", ["digits/"], "heatmaps/", actors=4)  # doctest: +SKIP
"""

from .errors import DeviceUnavailableError, NotExplainedError
from .files import explain_files
from .heatmap import heatmap, save_heatmap
from .preprocess import Preprocessing, load_image
from .ray_files import explain_files_ray
from .session import Explainer, Explanation

__all__ = [
    "Explainer",
    "Explanation",
    "DeviceUnavailableError",
    "NotExplainedError",
    "Preprocessing",
    "explain_files",
    "explain_files_ray",
    "heatmap",
    "load_image",
    "save_heatmap",
]
