"""The orthonormal DCT-II as a matrix, and a Gaussian blur's response in its domain.

A blur with a symmetric kernel and half-sample symmetric (``'reflect'``) borders is diagonal in the
DCT-II basis: each basis vector ``cos(πk(n + ½)/N)``, extended symmetrically at both ends, is the
2N-periodic cosine itself, and a symmetric kernel ``g[-r..r]`` maps it to
``ĝ[k] · cos(πk(n + ½)/N)`` with

.. math::

    \\hat g[k] = \\sum_{m=-r}^{r} g[m] \\cos(\\pi m k / N),

for any radius (a kernel wider than the signal wraps through further reflections, as
:func:`clipasso.xdog.gaussian_blur` does). So ``gaussian_blur(x, σ) = Cᵀ diag(ĝ) C x`` in each axis,
exactly in exact arithmetic; in floating point the two differ by rounding. With the orthonormal
``C``, Parseval's identity ``Σ x² = Σ (Cx)²`` turns a sum of squared blurred differences at any
number of scales into one weighted sum over the DCT coefficients of the difference:
:class:`clipasso.losses.EdgeLoss` computes its multi-scale error that way (``method="spectral"``),
at the cost of two small matrix products per image instead of a convolution per scale.

Example:
    >>> import torch
    >>> from clipasso.dct import dct_matrix, gaussian_response
    >>> from clipasso.xdog import gaussian_blur
    >>> x = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    >>> c, g = dct_matrix(8, dtype=torch.float64), gaussian_response(1.5, 8, dtype=torch.float64)
    >>> blurred = c.T @ (g[:, None] * g[None, :] * (c @ x[0, 0] @ c.T)) @ c
    >>> bool(torch.allclose(blurred, gaussian_blur(x, 1.5)[0, 0]))
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import InputError
from .xdog import gaussian_kernel1d

__all__ = ["dct_matrix", "gaussian_response"]


def dct_matrix(n: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """The orthonormal DCT-II matrix ``C``, ``[n, n]``: ``C[k, i] = a_k cos(πk(2i + 1) / 2n)`` with
    ``a_0 = √(1/n)``, ``a_k = √(2/n)``; ``C Cᵀ = I``. Computed in float64, then cast.

    Args:
        n: The signal length (>= 1).
        device: Where to put it.
        dtype: Its dtype (default: torch's default dtype).

    Returns:
        ``[n, n]``: row ``k`` is the ``k``-th basis vector.
    """
    if n < 1:
        raise InputError(f"the DCT length must be >= 1, got {n}")
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    i = torch.arange(n, dtype=torch.float64).view(1, -1)
    c = torch.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.to(device=device, dtype=dtype or torch.get_default_dtype())


def gaussian_response(
    sigma: float,
    n: int,
    *,
    truncate: float = 4.0,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The DCT-II eigenvalues ``ĝ[k]`` of :func:`clipasso.xdog.gaussian_blur`'s 1-D pass, ``[n]``.

    ``σ = 0`` (no blur) gives ones. The taps are :func:`clipasso.xdog.gaussian_kernel1d`'s (the same
    truncation), summed in float64.

    Args:
        sigma: The blur's standard deviation in pixels (>= 0).
        n: The signal length.
        truncate: Kernel radius in units of sigma, as for the blur.
        device: Where to put it.
        dtype: Its dtype (default: torch's default dtype).

    Returns:
        ``[n]``, each in ``(-1, 1]``; ``ĝ[0] = 1`` (the taps sum to 1).
    """
    if sigma < 0:
        raise InputError(f"sigma must be >= 0, got {sigma}")
    if n < 1:
        raise InputError(f"the DCT length must be >= 1, got {n}")
    if sigma == 0:
        return torch.ones(n, device=device, dtype=dtype or torch.get_default_dtype())
    taps = gaussian_kernel1d(sigma, truncate=truncate, dtype=torch.float64)
    r = (taps.numel() - 1) // 2
    m = torch.arange(-r, r + 1, dtype=torch.float64).view(1, -1)
    k = torch.arange(n, dtype=torch.float64).view(-1, 1)
    response = (taps.view(1, -1) * torch.cos(math.pi * m * k / n)).sum(1)
    return response.to(device=device, dtype=dtype or torch.get_default_dtype())
