"""clipasso: semantically-aware object sketching (CLIPasso) as a composable PyTorch library.

The one line most users write::

    from clipasso import Sketcher
    result = Sketcher().sketch("photo.png")   # best of 3, 16 strokes, the reference recipe
    result.save_svg("sketch.svg")

Everything the Sketcher wires is importable on its own: strokes (:class:`StrokeSet`), the
rasterizer (:func:`rasterize`), losses (:class:`SketchLoss` and friends), initializers
(:class:`Initializer`), CLIP loading (:func:`load_clip`).

Example:
    >>> import clipasso
    >>> "clip_conv" in clipasso.list_losses() and "saliency" in clipasso.list_initializers()
    True
"""

import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .threads import limit_spinning

# Idle OpenMP threads spin only briefly (GOMP_SPINCOUNT, unless set), so a busy machine does not
# stall torch's threads: it takes effect when clipasso is imported before torch (docs/performance.md,
# "Threads on an idle and a busy machine"; clipasso.threads).
limit_spinning()

# The public names, each imported from its module on first use (PEP 562): ``import clipasso`` and
# the command line's ``--help`` do not pay for importing torch until something needs it.
_EXPORTS: dict[str, str] = {
    "list_rasterizers": ".render",
    "available_models": ".models",
    "BackendUnavailableError": ".errors",
    "Callback": ".callbacks",
    "Engine": ".engine",
    "RunState": ".engine",
    "ProgressBar": ".engine",
    "Candidate": ".result",
    "CheckpointError": ".errors",
    "ClipassoError": ".errors",
    "CLIPConvLoss": ".losses",
    "CLIPSemanticLoss": ".losses",
    "CLIPViTLayerLoss": ".losses",
    "ComposedLoss": ".losses",
    "composite": ".render",
    "create_initializer": ".init",
    "create_loss": ".losses",
    "EdgeInitializer": ".init",
    "EdgeLoss": ".losses",
    "create_rasterizer": ".render",
    "Initializer": ".init",
    "INITIALIZERS": ".init",
    "InitResult": ".init",
    "InputError": ".errors",
    "LimitError": ".errors",
    "Limits": ".limits",
    "list_initializers": ".init",
    "list_losses": ".losses",
    "load_clip": ".models",
    "load_u2net": ".matting",
    "LossContext": ".losses",
    "LOSSES": ".losses",
    "LossHistory": ".result",
    "Matting": ".image",
    "NonFiniteLossError": ".errors",
    "OpacitySparsityLoss": ".losses",
    "otsu_threshold": ".xdog",
    "PixelL2Loss": ".losses",
    "prepare_target": ".image",
    "RandomInitializer": ".init",
    "rasterize": ".render",
    "Reseed": ".reseed",
    "Rasterizer": ".render",
    "RASTERIZERS": ".render",
    "ReferenceViews": ".augment",
    "register_initializer": ".init",
    "register_loss": ".losses",
    "register_rasterizer": ".render",
    "Registry": ".registry",
    "SaliencyInitializer": ".init",
    "save_saliency_figure": ".init",
    "SketchConfig": ".config",
    "Sketcher": ".sketcher",
    "SketchLoss": ".losses",
    "SketchResult": ".result",
    "SketchState": ".callbacks",
    "sketch_folders": ".batch",
    "StrokeSet": ".strokes",
    "SVGError": ".errors",
    "SVGInitializer": ".init",
    "SVGWarning": ".errors",
    "Target": ".image",
    "U2Net": ".matting",
    "U2NetMatting": ".matting",
    "WeightsError": ".errors",
    "xdog": ".xdog",
}

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .augment import ReferenceViews
    from .batch import sketch_folders
    from .callbacks import Callback, SketchState
    from .config import SketchConfig
    from .engine import Engine, ProgressBar, RunState
    from .errors import (
        BackendUnavailableError,
        CheckpointError,
        ClipassoError,
        InputError,
        LimitError,
        NonFiniteLossError,
        SVGError,
        SVGWarning,
        WeightsError,
    )
    from .image import Matting, Target, prepare_target
    from .init import (
        INITIALIZERS,
        EdgeInitializer,
        Initializer,
        InitResult,
        RandomInitializer,
        SaliencyInitializer,
        SVGInitializer,
        create_initializer,
        list_initializers,
        register_initializer,
        save_saliency_figure,
    )
    from .limits import Limits
    from .losses import (
        LOSSES,
        CLIPConvLoss,
        CLIPSemanticLoss,
        CLIPViTLayerLoss,
        ComposedLoss,
        EdgeLoss,
        LossContext,
        OpacitySparsityLoss,
        PixelL2Loss,
        SketchLoss,
        create_loss,
        list_losses,
        register_loss,
    )
    from .matting import U2Net, U2NetMatting, load_u2net
    from .models import available_models, load_clip
    from .registry import Registry
    from .render import (
        RASTERIZERS,
        Rasterizer,
        composite,
        create_rasterizer,
        list_rasterizers,
        rasterize,
        register_rasterizer,
    )
    from .reseed import Reseed
    from .result import Candidate, LossHistory, SketchResult
    from .sketcher import Sketcher
    from .strokes import StrokeSet
    from .xdog import otsu_threshold, xdog


class _Package(types.ModuleType):
    """The package's module type: the submodule ``clipasso.xdog`` must not replace the public
    function :func:`xdog` of the same name when some module imports it (the import system sets a
    submodule as an attribute of its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f".{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipasso' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "INITIALIZERS",
    "LOSSES",
    "RASTERIZERS",
    "BackendUnavailableError",
    "CLIPConvLoss",
    "CLIPSemanticLoss",
    "CLIPViTLayerLoss",
    "Callback",
    "Candidate",
    "CheckpointError",
    "ClipassoError",
    "ComposedLoss",
    "EdgeInitializer",
    "EdgeLoss",
    "Engine",
    "InitResult",
    "Initializer",
    "InputError",
    "LimitError",
    "Limits",
    "LossContext",
    "LossHistory",
    "Matting",
    "NonFiniteLossError",
    "OpacitySparsityLoss",
    "PixelL2Loss",
    "ProgressBar",
    "RandomInitializer",
    "Rasterizer",
    "ReferenceViews",
    "Registry",
    "Reseed",
    "RunState",
    "SVGError",
    "SVGInitializer",
    "SVGWarning",
    "SaliencyInitializer",
    "SketchConfig",
    "SketchLoss",
    "SketchResult",
    "SketchState",
    "Sketcher",
    "StrokeSet",
    "Target",
    "U2Net",
    "U2NetMatting",
    "WeightsError",
    "__version__",
    "available_models",
    "composite",
    "create_initializer",
    "create_loss",
    "create_rasterizer",
    "list_initializers",
    "list_losses",
    "list_rasterizers",
    "load_clip",
    "load_u2net",
    "otsu_threshold",
    "prepare_target",
    "rasterize",
    "register_initializer",
    "register_loss",
    "register_rasterizer",
    "save_saliency_figure",
    "sketch_folders",
    "xdog",
]
