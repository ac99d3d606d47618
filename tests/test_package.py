"""The package surface: imports, version, console script."""

from __future__ import annotations

import subprocess
import sys

import clipasso


def test_version_string() -> None:
    assert clipasso.__version__.count(".") >= 2


# The API surface users rely on: removing one of these is a breaking change (update the CHANGELOG).
PUBLIC_API = {
    "Sketcher",
    "sketch_folders",
    "SketchConfig",
    "SketchResult",
    "Candidate",
    "LossHistory",
    "Callback",
    "SketchState",
    "StrokeSet",
    "rasterize",
    "composite",
    "Rasterizer",
    "register_rasterizer",
    "create_rasterizer",
    "list_rasterizers",
    "SketchLoss",
    "LossContext",
    "create_loss",
    "list_losses",
    "register_loss",
    "CLIPConvLoss",
    "CLIPSemanticLoss",
    "CLIPViTLayerLoss",
    "EdgeLoss",
    "PixelL2Loss",
    "OpacitySparsityLoss",
    "ComposedLoss",
    "Initializer",
    "InitResult",
    "create_initializer",
    "list_initializers",
    "register_initializer",
    "SaliencyInitializer",
    "RandomInitializer",
    "SVGInitializer",
    "EdgeInitializer",
    "Reseed",
    "load_clip",
    "available_models",
    "prepare_target",
    "Target",
    "Matting",
    "U2Net",
    "U2NetMatting",
    "load_u2net",
    "ReferenceViews",
    "xdog",
    "otsu_threshold",
    "Registry",
    "ClipassoError",
    "InputError",
    "WeightsError",
    "SVGError",
    "CheckpointError",
    "NonFiniteLossError",
    "BackendUnavailableError",
    "LimitError",
    "SVGWarning",
    "Limits",
    "__version__",
}


def test_public_names_exist() -> None:
    assert set(clipasso.__all__) >= PUBLIC_API, sorted(PUBLIC_API - set(clipasso.__all__))
    for name in clipasso.__all__:
        assert hasattr(clipasso, name), name


def test_cli_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clipasso", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"clipasso {clipasso.__version__}"


def test_import_without_optional_dependencies() -> None:
    """`import clipasso` works with matplotlib, diffvg, scikit-image and scipy unavailable, and does
    not import CLIP until a model is loaded."""
    code = (
        "import sys\n"
        "for m in ('matplotlib', 'pydiffvg', 'diffvg', 'skimage', 'scipy'):\n"
        "    sys.modules[m] = None\n"
        "import clipasso, pkgutil, importlib\n"
        "assert 'clip' not in sys.modules, 'clip imported eagerly'\n"
        "for info in pkgutil.walk_packages(clipasso.__path__, 'clipasso.'):\n"
        "    if info.name not in ('clipasso.__main__',):\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
