"""A stub `torchvision` for the reference libraries that import it but never use it here.

torchvision has no CPU wheel matching torch 2.13.0+cpu on this index, and installing it pulls CUDA,
so it is never installed. Three libraries import it at import time:

* zennit 0.5.1 (`zennit/torchvision.py`): `torchvision.models.resnet.BasicBlock` and `Bottleneck`, for
  isinstance checks in its ResNet canonizer (which the harness does not use);
* timm 1.0 (`timm/layers/norm_act.py`, `create_norm.py`, `timm/utils/model.py`):
  `torchvision.ops.misc.FrozenBatchNorm2d`, for isinstance checks when freezing BatchNorm; and
  `timm.data`, imported by `timm.models`: dataset classes, `transforms.ToTensor` (subclassed) and
  `transforms.functional.InterpolationMode` (its members mapped to names at import time: an Enum here);
* LXT 2.1 (`lxt/efficient/models/vit_torch.py`): `torchvision.models.vision_transformer`, for its
  patch map of torchvision's ViT (benchmarks/lxt_ref.py imports only LXT's rules and patches).

Each class is an empty nn.Module subclass, so no isinstance check ever matches; anything else that
reaches for torchvision (timm.data's transforms, datasets) fails with AttributeError/ImportError.
"""

from __future__ import annotations

import enum
import importlib.util
import sys
import types

from torch import nn

_CLASSES = {  # module → the classes the libraries above look up in it
    "torchvision.models.resnet": ("BasicBlock", "Bottleneck"),
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
    "torchvision.models.vision_transformer": ("VisionTransformer", "EncoderBlock"),
    "torchvision.datasets": ("CIFAR100", "CIFAR10", "MNIST", "KMNIST", "FashionMNIST", "ImageFolder"),
    "torchvision.transforms": ("ToTensor",),
    "torchvision.transforms.functional": (),
}

_MODES = ("NEAREST", "NEAREST_EXACT", "BILINEAR", "BICUBIC", "BOX", "HAMMING", "LANCZOS")


def stub_torchvision() -> bool:
    """Put the stub into sys.modules unless a real torchvision is importable; True if the stub is in use.

    Idempotent: a second call (another library's harness) finds the stub and adds nothing twice."""
    tv = sys.modules.get("torchvision")
    if tv is None and importlib.util.find_spec("torchvision") is not None:
        return False
    if tv is not None and not getattr(tv, "__stub__", False):
        return False
    for name in ("torchvision", "torchvision.models", "torchvision.ops", *_CLASSES):  # parents first
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
    for name, classes in _CLASSES.items():
        for cls in classes:
            if not hasattr(sys.modules[name], cls):
                setattr(sys.modules[name], cls, type(cls, (nn.Module,), {"__doc__": "stub, never instantiated"}))
    functional = sys.modules["torchvision.transforms.functional"]
    if not hasattr(functional, "InterpolationMode"):  # timm.data maps its members to names at import time
        functional.InterpolationMode = enum.Enum("InterpolationMode", {m: m.lower() for m in _MODES})
    # vision_transformer's patch map names `vision_transformer.nn.GELU`: torch.nn, as in torchvision
    sys.modules["torchvision.models.vision_transformer"].nn = nn
    sys.modules["torchvision"].__stub__ = True
    return True
