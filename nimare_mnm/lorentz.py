"""Lorentz (hyperboloid) model of hyperbolic space, as small pure torch functions.

Convention
----------
Hyperbolic space of curvature ``-c`` (``c > 0``) is the upper sheet of the hyperboloid
``{X = (x_t, x_s) : <X, X>_L = -1/c, x_t > 0}`` in Minkowski space, with the Lorentzian
inner product ``<X, Y>_L = <x_s, y_s> - x_t * y_t``.  Every function here takes and returns
**space coordinates only**: a point is a tensor ``x`` of shape ``(..., d)`` and its time
coordinate is derived, ``x_t = sqrt(1/c + |x|^2)`` (:func:`time_component`), so points are on
the manifold by construction and any ``x`` in ``R^d`` is a valid point.  The origin is
``x = 0`` (``x_t = 1/sqrt(c)``).  Tangent vectors at the origin are given by their space part
(the time part of a tangent vector at the origin is zero).

``c`` may be a Python float or a 0-d tensor (for instance ``exp(log_c)`` of a learned
parameter, which then receives gradients).  Computations stay in the dtype of the input
points: nothing is autocast, so call these functions outside ``torch.autocast`` regions and
keep TF32 off for the matrix products of the ``pairwise_*`` functions.

Stability rules
---------------
* ``acosh(1 + t)`` is computed as ``log1p(t + sqrt(t * (t + 2)))`` with ``t >= 0``, never as
  ``acosh`` of a number that rounding may push below 1.
* No ``sqrt``, ``acos`` or ``asin`` is evaluated where its derivative is infinite: square roots
  of quantities that can vanish are floored (or given a linear segment) at :func:`eps_for`,
  and ``acos``/``asin`` arguments are clamped to ``[-1 + eps, 1 - eps]``.  Identical points,
  zero vectors and points on a ray through the origin therefore give finite gradients (the
  gradient of a clamped quantity is zero at the clamp).
* ``eps`` depends on the dtype: :data:`EPS_FLOAT32` (``1e-6``; ``1e-8`` rounds away next to 1
  in float32) and :data:`EPS_FLOAT64` (``1e-12``).
* ``sinh(r)/r`` and ``asinh(s)/s`` use a Taylor series near 0, selected with a double
  ``torch.where`` so that the unused branch cannot produce NaN gradients.
* :func:`expmap0` caps the hyperbolic radius at :data:`MAX_EXPMAP_RADIUS` so that ``sinh``
  cannot overflow.  Past a hyperbolic radius of about 4 float32 loses distance resolution
  between nearby points: keep embeddings moderate and monitor :func:`dist0`.

The formulas are the textbook ones for the hyperboloid model (e.g. Nickel & Kiela 2018,
Ganea et al. 2018 for entailment cones, Law et al. 2019 for the Lorentzian centroid).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "EPS_FLOAT32",
    "EPS_FLOAT64",
    "EPS_HALF",
    "MAX_EXPMAP_RADIUS",
    "centroid",
    "dist",
    "dist0",
    "entailment_loss",
    "eps_for",
    "expmap0",
    "exterior_angle",
    "half_aperture",
    "inner",
    "logmap0",
    "manifold_residual",
    "pairwise_dist",
    "pairwise_exterior_angle",
    "pairwise_inner",
    "project",
    "time_component",
    "to_hyperboloid",
]

#: Clamp margin for float32 inputs (``1 - 1e-8`` rounds to 1 in float32).
EPS_FLOAT32 = 1e-6
#: Clamp margin for float64 inputs.
EPS_FLOAT64 = 1e-12
#: Clamp margin for float16/bfloat16 inputs (not recommended for the geometry).
EPS_HALF = 1e-3
#: Largest hyperbolic radius produced by :func:`expmap0` (``asinh(2**15)``, about 11.09):
#: keeps ``sinh`` and the squared coordinates far from float32 overflow.
MAX_EXPMAP_RADIUS = math.asinh(2.0**15)

# Below this value of r^2 the Taylor series of sinh(r)/r and asinh(r)/r is used (its truncation
# error, ~1e-22 relative, is far below float64 rounding).
_SERIES_THRESHOLD = 1e-4


def eps_for(dtype: torch.dtype) -> float:
    """Return the clamp margin used for a floating dtype.

    Parameters
    ----------
    dtype : :obj:`torch.dtype`
        Floating dtype of the points.

    Returns
    -------
    :obj:`float`
        :data:`EPS_FLOAT64` for float64, :data:`EPS_FLOAT32` for float32, :data:`EPS_HALF`
        for 16-bit floats.
    """
    if dtype == torch.float64:
        return EPS_FLOAT64
    if dtype == torch.float32:
        return EPS_FLOAT32
    return EPS_HALF


def _curv(c: float | torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Return the curvature magnitude as a tensor with the dtype and device of ``ref``."""
    return torch.as_tensor(c, dtype=ref.dtype, device=ref.device)


def _norm(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm whose gradient is 0 (not NaN) at the zero vector."""
    sq = (x * x).sum(dim=dim, keepdim=keepdim)
    # sqrt has an infinite derivative at 0: floor the squared norm at the smallest normal float.
    return torch.sqrt(sq.clamp(min=torch.finfo(x.dtype).tiny))


def _sqrt_lin(u: torch.Tensor, eps: float) -> torch.Tensor:
    """Square root with a linear segment on ``[0, eps]``: exact 0 at 0, finite gradient.

    Equal to ``sqrt(u)`` for ``u >= eps`` and to ``u / sqrt(eps)`` below (continuous at
    ``eps``); negative inputs give 0.
    """
    # Rounding can make u slightly negative; sqrt is only defined for u >= 0.
    u = u.clamp(min=0.0)
    big = u > eps
    # The double where keeps the infinite derivative of sqrt at 0 out of the unused branch.
    root = torch.sqrt(torch.where(big, u, torch.full_like(u, eps)))
    return torch.where(big, root, u / math.sqrt(eps))


def _sinhc_sq(r2: torch.Tensor) -> torch.Tensor:
    """Return ``sinh(r) / r`` as a function of ``r2 = r**2``, capped at the expmap radius."""
    small = r2 < _SERIES_THRESHOLD
    series = 1.0 + r2 / 6.0 * (1.0 + r2 / 20.0 * (1.0 + r2 / 42.0 * (1.0 + r2 / 72.0)))
    # The double where keeps 0/0 at r = 0 out of the gradient of the unused branch.
    r = torch.sqrt(torch.where(small, torch.ones_like(r2), r2))
    # sinh overflows (and squared coordinates overflow sooner) for large radii: cap the radius.
    large = torch.sinh(r.clamp(max=MAX_EXPMAP_RADIUS)) / r
    return torch.where(small, series, large)


def _asinhc_sq(s2: torch.Tensor) -> torch.Tensor:
    """Return ``asinh(s) / s`` as a function of ``s2 = s**2``."""
    small = s2 < _SERIES_THRESHOLD
    series = 1.0 + s2 * (
        -1.0 / 6.0 + s2 * (3.0 / 40.0 + s2 * (-5.0 / 112.0 + s2 * (35.0 / 1152.0)))
    )
    # The double where keeps 0/0 at s = 0 out of the gradient of the unused branch.
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    large = torch.asinh(s) / s
    return torch.where(small, series, large)


def _acosh1p(t: torch.Tensor, eps: float) -> torch.Tensor:
    """Return ``acosh(1 + t)`` for ``t >= 0`` as ``log1p(t + sqrt(t * (t + 2)))``."""
    # Rounding can make the argument of acosh slightly < 1, i.e. t slightly < 0.
    t = t.clamp(min=0.0)
    return torch.log1p(t + _sqrt_lin(t * (t + 2.0), eps))


def time_component(x: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Time coordinate of points given by their space coordinates.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude (the space has curvature ``-c``).

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``sqrt(1/c + |x|^2)``.
    """
    c = _curv(c, x)
    return torch.sqrt(1.0 / c + (x * x).sum(dim=-1))


def to_hyperboloid(x: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Full ambient coordinates ``(x_t, x_s)`` of points given by their space coordinates.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., d + 1)
        Time coordinate first, then the space coordinates.
    """
    return torch.cat([time_component(x, c).unsqueeze(-1), x], dim=-1)


def project(x_full: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Project ambient points onto the hyperboloid by recomputing their time coordinate.

    Parameters
    ----------
    x_full : :obj:`torch.Tensor` of shape (..., d + 1)
        Ambient coordinates, time first (its value is ignored).
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., d + 1)
        ``(sqrt(1/c + |x_s|^2), x_s)``, which satisfies ``<x, x>_L = -1/c``.
    """
    return to_hyperboloid(x_full[..., 1:], c)


def manifold_residual(x_full: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Violation of the hyperboloid constraint by ambient points.

    Parameters
    ----------
    x_full : :obj:`torch.Tensor` of shape (..., d + 1)
        Ambient coordinates, time first (e.g. from :func:`to_hyperboloid`).
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``|<x, x>_L + 1/c|``; also reports a non-positive time coordinate as
        ``|<x, x>_L + 1/c| + 2 * max(-x_t, 0)`` so that the lower sheet is not accepted.
    """
    c = _curv(c, x_full)
    x_t, x_s = x_full[..., 0], x_full[..., 1:]
    residual = ((x_s * x_s).sum(dim=-1) - x_t * x_t + 1.0 / c).abs()
    return residual + 2.0 * (-x_t).clamp(min=0.0)


def expmap0(v: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Exponential map at the origin.

    Parameters
    ----------
    v : :obj:`torch.Tensor` of shape (..., d)
        Space part of a tangent vector at the origin.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., d)
        Space coordinates ``sinh(sqrt(c) |v|) / (sqrt(c) |v|) * v`` of the point at geodesic
        distance ``|v|`` from the origin in direction ``v``.  The hyperbolic radius is capped
        at :data:`MAX_EXPMAP_RADIUS` ``/ sqrt(c)`` (zero radial gradient beyond).  Smooth with
        finite gradient at ``v = 0``.
    """
    c = _curv(c, v)
    r2 = c * (v * v).sum(dim=-1, keepdim=True)
    return _sinhc_sq(r2) * v


def logmap0(x: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Logarithmic map at the origin (inverse of :func:`expmap0`).

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of points.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., d)
        Space part of the tangent vector at the origin,
        ``asinh(sqrt(c) |x|) / (sqrt(c) |x|) * x``; its norm is :func:`dist0`.
    """
    c = _curv(c, x)
    s2 = c * (x * x).sum(dim=-1, keepdim=True)
    return _asinhc_sq(s2) * x


def inner(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Paired Lorentzian inner product.

    Parameters
    ----------
    x, y : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates; leading dimensions broadcast.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``<x_s, y_s> - x_t * y_t`` (at most ``-1/c``).
    """
    return (x * y).sum(dim=-1) - time_component(x, c) * time_component(y, c)


def pairwise_inner(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """All-pairs Lorentzian inner products, as matrix products.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., n, d)
        Space coordinates.
    y : :obj:`torch.Tensor` of shape (..., m, d)
        Space coordinates; leading dimensions broadcast with those of ``x``.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., n, m)
        ``x @ y.T - outer(x_t, y_t)``.
    """
    t_x = time_component(x, c)
    t_y = time_component(y, c)
    return x @ y.transpose(-1, -2) - t_x.unsqueeze(-1) * t_y.unsqueeze(-2)


def _paired_gap(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> tuple:
    """Return ``t = -c <x, y>_L - 1`` and ``y_t - x_t`` without cancellation.

    Uses ``t = c/2 <X - Y, X - Y>_L`` and ``y_t - x_t = <y - x, y + x> / (x_t + y_t)``, so
    ``t`` is exactly 0 for identical points and accurate for nearby points far from the
    origin (where ``-c <x, y>_L - 1`` loses all its digits).
    """
    t_x = time_component(x, c)
    t_y = time_component(y, c)
    diff = y - x
    dt = (diff * (y + x)).sum(dim=-1) / (t_x + t_y)
    t = 0.5 * c * ((diff * diff).sum(dim=-1) - dt * dt)
    # X - Y is spacelike so t >= 0; rounding can make it slightly negative.
    return t.clamp(min=0.0), dt, t_x


def dist(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Paired geodesic distance.

    Parameters
    ----------
    x, y : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates; leading dimensions broadcast.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``acosh(-c <x, y>_L) / sqrt(c)``, computed as ``acosh(1 + t)`` with
        ``t = -c <x, y>_L - 1 = c/2 <X - Y, X - Y>_L`` (cancellation-free form, exactly 0 for
        identical points).  Finite gradient everywhere; below a distance of about
        ``sqrt(eps / c)`` the value is slightly underestimated (linear segment of the sqrt).
    """
    c = _curv(c, x)
    t, _, _ = _paired_gap(x, y, c)
    return _acosh1p(t, eps_for(x.dtype)) / torch.sqrt(c)


def pairwise_dist(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """All-pairs geodesic distances, from :func:`pairwise_inner`.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., n, d)
        Space coordinates.
    y : :obj:`torch.Tensor` of shape (..., m, d)
        Space coordinates.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., n, m)
        ``acosh(-c <x_i, y_j>_L) / sqrt(c)``.  Self-pairs are only approximately 0: the
        matrix-product form loses about ``|x|^2`` float eps in ``t``.
    """
    c = _curv(c, x)
    t = -c * pairwise_inner(x, y, c) - 1.0
    return _acosh1p(t, eps_for(x.dtype)) / torch.sqrt(c)


def dist0(x: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Geodesic distance to the origin (hyperbolic radius).

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``asinh(sqrt(c) |x|) / sqrt(c)``; gradient 0 (not NaN) at ``x = 0``.
    """
    c = _curv(c, x)
    sqrt_c = torch.sqrt(c)
    return torch.asinh(sqrt_c * _norm(x)) / sqrt_c


def half_aperture(
    x: torch.Tensor, c: float | torch.Tensor, min_radius: float = 0.1
) -> torch.Tensor:
    """Half-aperture of the entailment cone at ``x``.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of the cone apex (the general concept).
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.
    min_radius : :obj:`float`, default=0.1
        Constant ``K`` of the cone: cones are defined for ``sqrt(c) |x| > 2 K`` and widen to
        ``pi/2`` as ``x`` approaches that radius.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``asin(2 K / (sqrt(c) |x|))``, in ``(0, pi/2)``.
    """
    eps = eps_for(x.dtype)
    c = _curv(c, x)
    # The aperture is undefined at the origin: keep |x| away from 0 to avoid dividing by 0.
    norm = _norm(x).clamp(min=eps)
    arg = 2.0 * min_radius / (torch.sqrt(c) * norm)
    # asin has infinite derivative at +-1, and arg exceeds 1 inside radius 2K/sqrt(c).
    return torch.asin(arg.clamp(min=-1.0 + eps, max=1.0 - eps))


def _exterior_angle(
    t: torch.Tensor, dt: torch.Tensor, t_x: torch.Tensor, x_norm: torch.Tensor, eps: float
) -> torch.Tensor:
    """Exterior angle from ``t = -c<x,y>_L - 1``, ``dt = y_t - x_t``, ``x_t`` and ``|x_s|``."""
    # Numerator y_t + x_t c<x,y>_L written as (y_t - x_t) - x_t t.
    num = dt - t_x * t
    # sqrt((c<x,y>_L)^2 - 1) = sqrt(t (t + 2)) vanishes at y = x, where the angle is undefined.
    den = x_norm * torch.sqrt((t * (t + 2.0)).clamp(min=eps))
    # acos has infinite derivative at +-1, reached for y on the ray through x (angles 0, pi).
    return torch.acos((num / den).clamp(min=-1.0 + eps, max=1.0 - eps))


def exterior_angle(x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor) -> torch.Tensor:
    """Paired exterior angle of the entailment cone at ``x``, toward ``y``.

    The angle at ``x`` between the outward radial direction (the geodesic ray from the origin
    through ``x``, extended beyond ``x``) and the geodesic from ``x`` to ``y``.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of the cone apex (general concept, away from the origin).
    y : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of the other point (specific concept); broadcasts with ``x``.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``acos((y_t + x_t c <x, y>_L) / (|x_s| sqrt((c <x, y>_L)^2 - 1)))`` in ``[0, pi]``:
        about 0 when ``y`` lies on the ray beyond ``x``, about ``pi`` when ``y`` lies between
        the origin and ``x`` on that ray.  Clamped at the ends so gradients stay finite.
    """
    eps = eps_for(x.dtype)
    c = _curv(c, x)
    t, dt, t_x = _paired_gap(x, y, c)
    # The radial direction is undefined at the origin: keep |x| away from 0.
    x_norm = _norm(x).clamp(min=eps)
    return _exterior_angle(t, dt, t_x, x_norm, eps)


def pairwise_exterior_angle(
    x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor
) -> torch.Tensor:
    """All-pairs exterior angles (see :func:`exterior_angle`).

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., n, d)
        Space coordinates of the cone apexes.
    y : :obj:`torch.Tensor` of shape (..., m, d)
        Space coordinates of the other points.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.

    Returns
    -------
    :obj:`torch.Tensor` of shape (..., n, m)
        Entry ``[..., i, j]`` is the exterior angle at ``x_i`` toward ``y_j``.
    """
    eps = eps_for(x.dtype)
    c = _curv(c, x)
    t_x = time_component(x, c).unsqueeze(-1)
    t_y = time_component(y, c).unsqueeze(-2)
    t = -c * (x @ y.transpose(-1, -2) - t_x * t_y) - 1.0
    # Rounding can make -c<x,y>_L slightly < 1, i.e. t slightly < 0.
    t = t.clamp(min=0.0)
    # The radial direction is undefined at the origin: keep |x| away from 0.
    x_norm = _norm(x).clamp(min=eps).unsqueeze(-1)
    return _exterior_angle(t, t_y - t_x, t_x, x_norm, eps)


def entailment_loss(
    x: torch.Tensor, y: torch.Tensor, c: float | torch.Tensor, min_radius: float = 0.1
) -> torch.Tensor:
    """Paired entailment-cone loss: how far ``y`` lies outside the cone of ``x``.

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of the general (parent) concepts, the cone apexes.
    y : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates of the specific (child) concepts.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.
    min_radius : :obj:`float`, default=0.1
        Cone constant ``K`` of :func:`half_aperture`.

    Returns
    -------
    :obj:`torch.Tensor` of shape (...)
        ``max(0, exterior_angle(x, y) - half_aperture(x))``, unreduced.
    """
    return torch.relu(exterior_angle(x, y, c) - half_aperture(x, c, min_radius))


def centroid(
    x: torch.Tensor,
    c: float | torch.Tensor,
    weights: torch.Tensor | None = None,
    dim: int = 0,
) -> torch.Tensor:
    """Lorentzian centroid (Einstein midpoint) of points.

    The weighted sum of the ambient points ``(x_t, x_s)``, rescaled back onto the
    hyperboloid: ``S / sqrt(c |<S, S>_L|)``.  It minimises the weighted sum of squared
    Lorentzian distances to the points (Law et al., 2019).

    Parameters
    ----------
    x : :obj:`torch.Tensor` of shape (..., d)
        Space coordinates; the points to average run along ``dim``.
    c : :obj:`float` or 0-d :obj:`torch.Tensor`
        Curvature magnitude.
    weights : :obj:`torch.Tensor`, optional
        Non-negative weights, not all zero.  Either 1-D with ``x.shape[dim]`` entries or
        broadcastable to ``x.shape[:-1]``.  Default: equal weights.
    dim : :obj:`int`, default=0
        Dimension of ``x`` that indexes the points; must not be the last (coordinate)
        dimension.

    Returns
    -------
    :obj:`torch.Tensor`
        Space coordinates of the centroid: ``x`` with ``dim`` removed.
    """
    dim = dim % x.ndim
    if dim == x.ndim - 1:
        raise ValueError("dim indexes the coordinates; it must index the points.")
    c = _curv(c, x)
    full = to_hyperboloid(x, c)
    if weights is None:
        weights = torch.ones(x.shape[dim], dtype=x.dtype, device=x.device)
    weights = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if weights.ndim == 1 and x.ndim > 2:
        shape = [1] * (x.ndim - 1)
        shape[dim] = -1
        weights = weights.reshape(shape)
    weights = torch.broadcast_to(weights, x.shape[:-1])
    weights = weights.unsqueeze(-1)
    total = weights.sum(dim=dim, keepdim=True)
    # Normalising makes c * -<S,S>_L >= 1; all-zero weights would divide by 0.
    weights = weights / total.clamp(min=torch.finfo(x.dtype).tiny)
    s = (weights * full).sum(dim=dim)
    s_t, s_s = s[..., 0], s[..., 1:]
    neg_sq = s_t * s_t - (s_s * s_s).sum(dim=-1)
    # c * -<S,S>_L >= 1 for normalised non-negative weights; rounding can break that near 0.
    scale = torch.sqrt((c * neg_sq).clamp(min=eps_for(x.dtype)))
    return s_s / scale.unsqueeze(-1)
