"""clipasso: semantically-aware object sketching (CLIPasso) as a composable PyTorch library.

Example:
    >>> import clipasso
    >>> isinstance(clipasso.__version__, str)
    True
"""

from ._version import __version__
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ClipassoError,
    InputError,
    NonFiniteLossError,
    SVGError,
    WeightsError,
)
from .models import available_models, load_clip
from .sketcher import Sketcher
from .registry import Registry

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ClipassoError",
    "InputError",
    "NonFiniteLossError",
    "Registry",
    "SVGError",
    "Sketcher",
    "WeightsError",
    "__version__",
    "available_models",
    "load_clip",
]
