"""Loading OpenAI CLIP weights: by model name (download + SHA-256 check) or from a local file.

One function, :func:`load_clip`, serves every use in the library. A *name* such as ``"RN101"`` or
``"ViT-B/32"`` is looked up, in order, in

1. the environment variable ``CLIPASSO_WEIGHTS_<NAME>`` (e.g. ``CLIPASSO_WEIGHTS_RN101``,
   ``CLIPASSO_WEIGHTS_VIT_B_32``) naming a local file,
2. the cache directory (argument ``cache_dir``, else ``$CLIPASSO_CACHE``, else
   ``$XDG_CACHE_HOME/clipasso`` or ``~/.cache/clipasso``) under OpenAI's file name (``RN101.pt``),
3. OpenAI CLIP's own download folder ``~/.cache/clip`` (files other tools already fetched),
4. a download from OpenAI's published URL into the cache, verified against the published SHA-256.

A *path* is read either as OpenAI's TorchScript archive (the released ``.pt`` format) or as a plain
state dict saved with :func:`torch.save` (read with ``weights_only=True``). In both cases the
network is rebuilt as a plain (non-TorchScript) :class:`clip.model.CLIP` in float32, so forward
hooks, feature taps and autograd work on it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

import torch
from torch import nn

from ..errors import WeightsError

__all__ = [
    "CLIP_MODELS",
    "available_models",
    "build_clip",
    "default_cache_dir",
    "load_clip",
    "read_state_dict",
    "resolve_weights",
    "weights_env_var",
]

_BASE = "https://openaipublic.azureedge.net/clip/models"

#: Published CLIP checkpoints: name -> (url, sha256). The SHA-256 is part of OpenAI's URL.
CLIP_MODELS: dict[str, tuple[str, str]] = {
    name: (f"{_BASE}/{sha}/{fname}", sha)
    for name, sha, fname in [
        ("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
        ("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
        ("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
        ("RN50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
        ("RN50x64", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
        ("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
        ("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
        ("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
        (
            "ViT-L/14@336px",
            "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            "ViT-L-14-336px.pt",
        ),
    ]
}

_DOWNLOAD_TIMEOUT_S = 30.0
_MAX_CONTEXT = 4096


def available_models() -> list[str]:
    """Names accepted by :func:`load_clip` besides file paths.

    Example:
        >>> "RN101" in available_models() and "ViT-B/32" in available_models()
        True
    """
    return list(CLIP_MODELS)


def default_cache_dir() -> Path:
    """The weights cache directory.

    ``$CLIPASSO_CACHE``, else ``$XDG_CACHE_HOME/clipasso``, else ``~/.cache/clipasso``.
    """
    env = os.environ.get("CLIPASSO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "clipasso"


def weights_env_var(name: str) -> str:
    """Environment variable that may point at a local file for model ``name``.

    Example:
        >>> weights_env_var("ViT-B/32")
        'CLIPASSO_WEIGHTS_VIT_B_32'
    """
    return "CLIPASSO_WEIGHTS_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")


def _file_name(name: str) -> str:
    return CLIP_MODELS[name][0].rsplit("/", 1)[-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _urlopen(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (a seam tests replace to simulate the network)."""
    return cast(IO[bytes], urllib.request.urlopen(url, timeout=timeout))


#: What each model is for, as :func:`load_clip`'s ``role`` names it: the setting and the command-line
#: flag that pass a local weights file for it.
ROLES: dict[str, tuple[str, str]] = {
    "loss": ("clip_model", "--clip-weights"),
    "saliency": ("saliency_model", "--saliency-weights"),
}


def _offline_help(name: str, cache: Path, role: str | None = None) -> str:
    if role in ROLES:
        setting, flag = ROLES[role]
        where = f"{flag} FILE on the command line, SketchConfig.{setting}"
    else:
        where = (
            "--clip-weights FILE (the loss's model) or --saliency-weights FILE (the saliency "
            "map's) on the command line"
        )
    return (
        f"To use a local copy instead, pass its path ({where}, or load_clip('/path/to/"
        f"{_file_name(name)}')), or set {weights_env_var(name)}=/path/to/{_file_name(name)}, or put "
        f"the file in the cache directory {cache} (set CLIPASSO_CACHE to move it). No CLIP weights at "
        "all? `clipasso sketch IMAGE --loss edges` needs none."
    )


def _download(name: str, cache: Path, role: str | None = None) -> Path:
    url, sha = CLIP_MODELS[name]
    target = cache / _file_name(name)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache directory {cache}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(url, _DOWNLOAD_TIMEOUT_S) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsError(
                f"could not download CLIP model {name!r} from {url} ({reason}); the machine may be "
                f"offline. {_offline_help(name, cache, role)}"
            ) from exc
        if digest.hexdigest() != sha:
            raise WeightsError(
                f"downloaded CLIP model {name!r} from {url} but its SHA-256 {digest.hexdigest()} does not "
                f"match the published {sha}; nothing was saved. {_offline_help(name, cache, role)}"
            )
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def resolve_weights(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    role: str | None = None,
) -> Path:
    """Find (and if needed download) the weights file for a model name or path.

    Args:
        name_or_path: A name from :func:`available_models` or the path of a weights file.
        cache_dir: Cache directory; defaults to :func:`default_cache_dir`.
        download: If False, never touch the network (raise instead).
        role: What the model is for, ``"loss"`` or ``"saliency"`` (:data:`ROLES`): the error
            messages then name the matching setting and command-line flag.

    Returns:
        The path of a readable weights file.

    Raises:
        WeightsError: Unknown name, missing file, failed download or checksum mismatch; the message
            says how to pass a local file.
    """
    text = os.fspath(name_or_path)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if text in CLIP_MODELS:
        env_path = os.environ.get(weights_env_var(text))
        if env_path:
            path = Path(env_path).expanduser()
            if not path.is_file():
                raise WeightsError(f"{weights_env_var(text)} points to {path}, which is not a file")
            return path
        sha = CLIP_MODELS[text][1]
        for folder in (cache, Path.home() / ".cache" / "clip"):
            candidate = folder / _file_name(text)
            if candidate.is_file():
                if _sha256(candidate) == sha:
                    return candidate
                warnings.warn(
                    f"{candidate} does not match the published SHA-256 of {text}; ignoring it", stacklevel=2
                )
        if not download:
            raise WeightsError(
                f"CLIP model {text!r} is not in the cache and downloads are disabled. "
                f"{_offline_help(text, cache, role)}"
            )
        return _download(text, cache, role)
    path = Path(text).expanduser()
    if path.is_dir():
        raise WeightsError(f"CLIP weights path {path} is a directory, not a file")
    if not path.is_file():
        known = ", ".join(CLIP_MODELS)
        raise WeightsError(
            f"CLIP weights {text!r} not found: it is neither an existing file nor a known "
            f"model name ({known})"
        )
    return path


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a CLIP state dict from a TorchScript archive or a ``torch.save`` file.

    Plain files are read with ``weights_only=True``; a TorchScript archive is loaded with
    :func:`torch.jit.load` (the only way to read that format) and its ``state_dict()`` taken.

    Raises:
        WeightsError: If the file is neither format or holds no tensors.
    """
    path = Path(path)
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit is deprecated, but it is OpenAI's format
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
            raw: Any = module.state_dict()
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for a bad file
        raise WeightsError(
            f"could not read CLIP weights from {path}: the file is neither an OpenAI "
            f"TorchScript archive nor a torch.save state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(raw, Mapping) and key in raw and isinstance(raw[key], Mapping):
            raw = raw[key]
    if not isinstance(raw, Mapping) or not raw:
        raise WeightsError(f"{path} does not contain a state dict (found {type(raw).__name__})")
    out: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k.removeprefix("module.")] = v
    return out


def _architecture(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer CLIP's constructor arguments from the shapes in a state dict."""
    required = ["text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in required if k not in sd]
    if "visual.proj" in sd:
        missing += [k for k in ("visual.conv1.weight", "visual.positional_embedding") if k not in sd]
    elif "visual.layer1.0.conv1.weight" not in sd or "visual.attnpool.positional_embedding" not in sd:
        missing.append("visual.layer1.0.conv1.weight / visual.attnpool.positional_embedding (or visual.proj)")
    if missing:
        raise WeightsError("not a CLIP checkpoint: missing " + ", ".join(missing))
    if "visual.proj" in sd:
        width = sd["visual.conv1.weight"].shape[0]
        layers: Any = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        resolution = patch * grid
    else:
        layers = tuple(
            len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)
        )
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        out_width = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        patch = None
        resolution = out_width * 32
    text_width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=resolution,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=text_width,
        transformer_heads=text_width // 64,
        transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    )


def build_clip(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Build a float32 :class:`clip.model.CLIP` from a state dict (architecture inferred from shapes).

    Unlike ``clip.model.build_model`` this keeps the weights' precision (no float16 round trip) and
    skips the random initialisation (the module is created on the meta device and the tensors are
    assigned).

    Raises:
        WeightsError: If the state dict is not a CLIP checkpoint or does not fit the architecture.
    """
    from clip.model import CLIP  # lazy: keeps `import clipasso` light

    sd = {
        k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")
    }
    try:
        arch = _architecture(sd)
        if not 1 <= arch["context_length"] <= _MAX_CONTEXT:  # the text mask is context_length² floats
            raise WeightsError(
                f"not a CLIP checkpoint: a text context of {arch['context_length']} tokens (CLIP's is 77; "
                f"at most {_MAX_CONTEXT} are accepted)"
            )
        with torch.device("meta"):
            model = CLIP(**arch)
    except WeightsError:
        raise
    except Exception as exc:  # shapes that no CLIP has (a damaged or foreign state dict)
        raise WeightsError(
            f"not a CLIP checkpoint: its tensor shapes do not describe a CLIP model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"the weights do not fit a CLIP model: {str(exc).splitlines()[0]}") from exc
    mask = model.build_attention_mask()  # a plain attribute (not a buffer): rebuild off the meta device
    model.transformer.attn_mask = mask
    for block in model.transformer.resblocks:
        block.attn_mask = mask
    for visual_block in getattr(getattr(model.visual, "transformer", None), "resblocks", []):
        visual_block.attn_mask = None
    return model


def load_clip(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    role: str | None = None,
) -> nn.Module:
    """Load a frozen CLIP model by name (downloaded and verified) or from a local weights file.

    Args:
        name_or_path: A name from :func:`available_models` (``"RN101"``, ``"ViT-B/32"``, ...) or the
            path of an OpenAI TorchScript archive or a ``torch.save``'d state dict.
        device: Where to put the model (default CPU).
        dtype: Parameter dtype (default float32).
        cache_dir: Download cache (default :func:`default_cache_dir`).
        download: Allow network access for names that are not cached.
        role: ``"loss"`` or ``"saliency"``: which setting and flag the error messages name.

    Returns:
        A :class:`clip.model.CLIP` in eval mode with ``requires_grad`` off for every parameter.

    Raises:
        WeightsError: Unknown name, missing or corrupt file, offline download, checksum mismatch.

    Example:
        >>> from clipasso.testing import tiny_clip_file
        >>> model = load_clip(tiny_clip_file("resnet"))
        >>> model.training, next(model.parameters()).requires_grad
        (False, False)
    """
    path = resolve_weights(name_or_path, cache_dir=cache_dir, download=download, role=role)
    model = build_clip(read_state_dict(path))
    model.requires_grad_(False)
    model.eval()
    return model.to(device=device, dtype=dtype)
