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

from ._version import __version__
from .augment import ReferenceViews
from .callbacks import Callback, SketchState
from .config import SketchConfig
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ClipassoError,
    InputError,
    NonFiniteLossError,
    SVGError,
    WeightsError,
)
from .image import Matting, Target, prepare_target
from .init import (
    INITIALIZERS,
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
from .losses import (
    LOSSES,
    CLIPConvLoss,
    CLIPSemanticLoss,
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
from .models import available_models, load_clip
from .registry import Registry
from .render import (
    RASTERIZERS,
    Rasterizer,
    available_backends,
    composite,
    get_rasterizer,
    rasterize,
    register_rasterizer,
)
from .result import Candidate, LossHistory, SketchResult
from .sketcher import Sketcher
from .strokes import StrokeSet
from .xdog import otsu_threshold, xdog

__all__ = [
    "INITIALIZERS",
    "LOSSES",
    "RASTERIZERS",
    "BackendUnavailableError",
    "CLIPConvLoss",
    "CLIPSemanticLoss",
    "Callback",
    "Candidate",
    "CheckpointError",
    "ClipassoError",
    "ComposedLoss",
    "EdgeLoss",
    "InitResult",
    "Initializer",
    "InputError",
    "LossContext",
    "LossHistory",
    "Matting",
    "NonFiniteLossError",
    "OpacitySparsityLoss",
    "PixelL2Loss",
    "RandomInitializer",
    "Rasterizer",
    "ReferenceViews",
    "Registry",
    "SVGError",
    "SVGInitializer",
    "SaliencyInitializer",
    "SketchConfig",
    "SketchLoss",
    "SketchResult",
    "SketchState",
    "Sketcher",
    "StrokeSet",
    "Target",
    "WeightsError",
    "__version__",
    "available_backends",
    "available_models",
    "composite",
    "create_initializer",
    "create_loss",
    "get_rasterizer",
    "list_initializers",
    "list_losses",
    "load_clip",
    "otsu_threshold",
    "prepare_target",
    "rasterize",
    "register_initializer",
    "register_loss",
    "register_rasterizer",
    "save_saliency_figure",
    "xdog",
]
