"""BatchNorm folded into the convolutions before it: a cheaper copy of a frozen ResNet tower.

A frozen BatchNorm in eval mode is an affine map per channel, ``y = s * (x - mean) + beta`` with
``s = gamma / sqrt(var + eps)``; after a convolution ``x = w * u + b`` it folds into that
convolution: weights ``s * w`` and bias ``s * (b - mean) + beta``. The folded tower computes the
same function without the BatchNorm passes (forward and backward), which on a 2-core CPU is about a
tenth of a CLIP RN101 forward + backward (docs/performance.md, "BatchNorm folded into the
convolutions"). The numbers are the same in exact arithmetic, not bit for bit: the fold rounds
``s * w`` once, and in bf16 the folded weights and the skipped BatchNorm round differently from the
unfolded pass (about as far from fp32 as the unfolded bf16 pass is, measured in the tests).

Which pairs fold: a ``Conv2d`` attribute ``convK`` followed by a ``BatchNorm2d`` attribute ``bnK`` of
the same module (CLIP's ResNet stem and its bottlenecks), and a ``Conv2d`` directly followed by a
``BatchNorm2d`` in an ``nn.Sequential`` (their downsampling branches). That naming is how CLIP's
ModifiedResNet is written, not a rule every network keeps, so :class:`FoldedTower` checks every new
copy against the tower on a small input and keeps the tower unfolded, with a warning, if they
disagree.

Example:
    >>> tower = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval().requires_grad_(False)
    >>> folded = fold_batchnorm(tower)
    >>> type(folded[1]).__name__, folded[0].bias is not None
    ('Identity', True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .precision import _CAST_MODULES, tensor_key, weight_copy

__all__ = ["FoldedTower", "batchnorm_pairs", "fold_batchnorm"]


def batchnorm_pairs(tower: nn.Module) -> list[tuple[str, str, str]]:
    """The ``(module path, conv name, BatchNorm name)`` pairs of ``tower`` that :func:`fold_batchnorm`
    folds: ``convK``/``bnK`` attributes of one module, and a ``Conv2d`` directly followed by a
    ``BatchNorm2d`` in an ``nn.Sequential``; only eval-mode BatchNorms with running statistics and
    matching channel counts.

    Example:
        >>> batchnorm_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval())
        [('', '0', '1')]
    """
    found: list[tuple[str, str, str]] = []
    for path, module in tower.named_modules():
        children = dict(module.named_children())
        names = list(children)
        for i, name in enumerate(names):
            conv = children[name]
            if not isinstance(conv, nn.Conv2d):
                continue
            partner: str | None = None
            if name.startswith("conv") and f"bn{name[4:]}" in children:
                partner = f"bn{name[4:]}"
            elif isinstance(module, nn.Sequential) and i + 1 < len(names):
                partner = names[i + 1]
            if partner is None:
                continue
            bn = children[partner]
            if (
                isinstance(bn, nn.BatchNorm2d)
                and not bn.training
                and bn.running_mean is not None
                and bn.running_var is not None
                and bn.num_features == conv.out_channels
            ):
                found.append((path, name, partner))
    return found


def _folded_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weights ``[O, I, k, k]`` and bias ``[O]`` of ``bn(conv(x))`` as one convolution, in float64
    arithmetic (rounded once, by the caller's cast)."""
    assert bn.running_mean is not None and bn.running_var is not None
    var = bn.running_var.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double()
    if conv.bias is not None:
        shift = shift + conv.bias.detach().double()
    bias = scale * shift
    if bn.bias is not None:
        bias = bias + bn.bias.detach().double()
    weight = conv.weight.detach().double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight, bias


def fold_batchnorm(tower: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of frozen ``tower`` with each BatchNorm of :func:`batchnorm_pairs` folded into its
    convolution (the BatchNorm replaced by ``nn.Identity``).

    Args:
        tower: A module in eval mode (its BatchNorms use running statistics); left unchanged.
        dtype: The dtype of the copy's convolution and linear weights (None: each keeps its own);
            bf16 gives the weights that bf16 autocast would use, made once. The other parameters
            and buffers, and weights already in ``dtype`` that do not fold, are shared with
            ``tower``, not copied.

    Returns:
        The folded copy, frozen (no parameter requires grad).
    """
    pairs = batchnorm_pairs(tower)
    weights: dict[int, Tensor] = {}
    biases: dict[tuple[str, str], Tensor] = {}
    for path, conv_name, bn_name in pairs:
        parent = tower.get_submodule(path)
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        weights[id(conv.weight)], bias = _folded_weights(conv, bn)
        biases[path, conv_name] = bias.to(dtype or conv.weight.dtype)
    out = weight_copy(tower, dtype, replace=weights)
    for path, conv_name, bn_name in pairs:
        parent = out.get_submodule(path)
        getattr(parent, conv_name).bias = nn.Parameter(biases[path, conv_name], requires_grad=False)
        setattr(parent, bn_name, nn.Identity())
    return out.requires_grad_(False)


class FoldedTower:
    """The BatchNorm-folded copy of a frozen tower (:func:`fold_batchnorm`), built on first use and
    reused while the tower's weights and statistics stand: rebuilt when any convolution, linear or
    BatchNorm tensor changes (in place or replaced), the tower moves, or another dtype is asked for.

    A tower with trainable weights, a BatchNorm in training mode, or nothing to fold is returned as
    it is. Each new copy is checked against the tower by ``check`` (when given): a callable that
    returns the relative difference of the two's outputs on a probe; above ``tolerance`` the tower
    is used unfolded, with a warning (a network whose ``convK``/``bnK`` naming does not mean
    ``bnK(convK(x))``).

    Example:
        >>> tower = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval().requires_grad_(False)
        >>> cache = FoldedTower()
        >>> cache.get(tower) is cache.get(tower), type(cache.get(tower)[1]).__name__
        (True, 'Identity')
    """

    def __init__(
        self,
        check: Callable[[nn.Module, nn.Module, torch.dtype], float] | None = None,
        tolerance: float = 0.05,
    ) -> None:
        self.check = check
        self.tolerance = float(tolerance)
        self._key: tuple[object, ...] | None = None
        self._copy: nn.Module | None = None
        #: The relative difference the last check measured (None before any check).
        self.checked: float | None = None

    @staticmethod
    def _sources(tower: nn.Module) -> list[Tensor] | None:
        """The tensors a folded copy is made from; None if a BatchNorm is in training mode."""
        out: list[Tensor] = []
        for mod in tower.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
                return None
            if isinstance(mod, (*_CAST_MODULES, nn.BatchNorm2d)):
                stats = (getattr(mod, "running_mean", None), getattr(mod, "running_var", None))
                out.extend(t for t in (mod.weight, mod.bias, *stats) if isinstance(t, Tensor))
        return out

    def get(self, tower: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The folded copy of ``tower`` with ``dtype`` weights (or ``tower`` itself, see above)."""
        sources = self._sources(tower)
        if sources is None or any(t.requires_grad for t in sources):
            return tower
        key = (dtype, *tensor_key(tower, sources))
        if self._copy is None or key != self._key:
            built = fold_batchnorm(tower, dtype) if batchnorm_pairs(tower) else tower
            if built is not tower and self.check is not None:
                self.checked = float(self.check(tower, built, dtype))
                if not self.checked <= self.tolerance:
                    warnings.warn(
                        f"fold_batchnorm: the folded tower differs from the tower by {self.checked:.3g} "
                        f"(relative, > {self.tolerance}) on a probe; running it unfolded",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    built = tower
            self._copy, self._key = built, key
        return self._copy

    def clear(self) -> None:
        """Drop the copy (it is rebuilt on the next :meth:`get`)."""
        self._key, self._copy = None, None
