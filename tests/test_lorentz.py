"""Tests for nimare_mnm.lorentz: values, gradients and numerical stability."""

import math

import pytest
import torch

from nimare_mnm import lorentz
from nimare_mnm.lorentz import (
    centroid,
    dist,
    dist0,
    entailment_loss,
    expmap0,
    exterior_angle,
    half_aperture,
    inner,
    logmap0,
    manifold_residual,
    pairwise_dist,
    pairwise_exterior_angle,
    pairwise_inner,
    project,
    time_component,
    to_hyperboloid,
)

CURVATURES = [0.1, 1.0, 10.0]
F64 = torch.float64
F32 = torch.float32


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_points(n, d=4, radius=1.5, c=1.0, dtype=F64, seed=0):
    """Points at hyperbolic radius about ``radius`` in random directions."""
    g = _gen(seed)
    v = torch.randn(n, d, generator=g, dtype=F64)
    v = v / v.norm(dim=-1, keepdim=True)
    r = radius * (0.5 + torch.rand(n, 1, generator=g, dtype=F64))
    return expmap0(v * r, c).to(dtype)


def unit(d=4, seed=0, dtype=F64):
    u = torch.randn(d, generator=_gen(seed), dtype=F64)
    return (u / u.norm()).to(dtype)


def assert_finite_grad(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    assert torch.isfinite(out).all(), out
    grads = torch.autograd.grad(out.sum(), inputs, allow_unused=True)
    for grad in grads:
        assert grad is not None
        assert torch.isfinite(grad).all(), grad


# --------------------------------------------------------------------------- gradcheck (float64)


@pytest.mark.parametrize("c", CURVATURES)
def test_gradcheck_distances(c):
    x = random_points(3, c=c, seed=1).requires_grad_(True)
    y = random_points(3, c=c, seed=2).requires_grad_(True)
    ct = torch.tensor(c, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, k: dist(a, b, k), (x, y, ct))
    assert torch.autograd.gradcheck(lambda a, b, k: pairwise_dist(a, b, k), (x, y, ct))
    assert torch.autograd.gradcheck(lambda a, k: dist0(a, k), (x, ct))


@pytest.mark.parametrize("c", CURVATURES)
def test_gradcheck_maps(c):
    g = _gen(3)
    v = torch.randn(3, 4, generator=g, dtype=F64).requires_grad_(True)
    ct = torch.tensor(c, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, k: expmap0(a, k), (v, ct))
    assert torch.autograd.gradcheck(lambda a, k: logmap0(a, k), (v, ct))
    # Inside the Taylor-series branch (c |v|^2 < 1e-4).
    small = (1e-3 * torch.randn(3, 4, generator=g, dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: expmap0(a, c), (small,))
    assert torch.autograd.gradcheck(lambda a: logmap0(a, c), (small,))


@pytest.mark.parametrize("c", CURVATURES)
def test_gradcheck_cones(c):
    x = random_points(3, c=c, seed=4).requires_grad_(True)
    y = random_points(3, c=c, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: exterior_angle(a, b, c), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: pairwise_exterior_angle(a, b, c), (x, y))
    assert torch.autograd.gradcheck(lambda a: half_aperture(a, c, min_radius=0.1), (x,))


@pytest.mark.parametrize("c", CURVATURES)
def test_gradcheck_centroid(c):
    x = random_points(4, c=c, seed=6).requires_grad_(True)
    w = (0.5 + torch.rand(4, generator=_gen(7), dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: centroid(a, c), (x,))
    assert torch.autograd.gradcheck(lambda a, b: centroid(a, c, weights=b), (x, w))


# ------------------------------------------------------------------------ pairwise == paired


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", CURVATURES)
def test_pairwise_matches_paired(c, dtype):
    x = random_points(5, c=c, dtype=dtype, seed=8)
    y = random_points(6, c=c, dtype=dtype, seed=9)
    tol = 1e-4 if dtype == F32 else 1e-10
    pi = pairwise_inner(x, y, c)
    assert pi.shape == (5, 6)
    torch.testing.assert_close(pi, inner(x[:, None], y[None], c), rtol=tol, atol=tol)
    torch.testing.assert_close(
        pairwise_dist(x, y, c), dist(x[:, None], y[None], c), rtol=tol, atol=tol
    )
    torch.testing.assert_close(
        pairwise_exterior_angle(x, y, c),
        exterior_angle(x[:, None], y[None], c),
        rtol=tol,
        atol=tol,
    )
    # Diagonal of a square pairwise matrix equals the paired computation.
    z = random_points(6, c=c, dtype=dtype, seed=10)
    torch.testing.assert_close(
        torch.diagonal(pairwise_dist(z, y, c)), dist(z, y, c), rtol=tol, atol=tol
    )


def test_pairwise_batched_leading_dims():
    x = random_points(8, seed=11).reshape(2, 4, 4)
    y = random_points(10, seed=12).reshape(2, 5, 4)
    d = pairwise_dist(x, y, 1.0)
    assert d.shape == (2, 4, 5)
    for b in range(2):
        torch.testing.assert_close(d[b], pairwise_dist(x[b], y[b], 1.0))


def test_dist_matches_acosh_reference():
    # The cancellation-free form must agree with the textbook acosh(-c<x,y>)/sqrt(c).
    for c in CURVATURES:
        x = random_points(20, c=c, seed=13)
        y = random_points(20, c=c, seed=14)
        ref = torch.acosh(-c * inner(x, y, c)) / math.sqrt(c)
        torch.testing.assert_close(dist(x, y, c), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(pairwise_dist(x, y, c).diagonal(), ref)


# -------------------------------------------------------------------------- metric properties


@pytest.mark.parametrize("c", CURVATURES)
def test_self_distance_near_zero(c):
    # Points at hyperbolic radius 3 in units of 1/sqrt(c); distances are compared in the same
    # units (float32 rounding in the matrix-product form grows like exp(2 sqrt(c) radius)).
    v = torch.randn(50, 8, generator=_gen(15), dtype=F64)
    v = 3.0 / math.sqrt(c) * v / v.norm(dim=-1, keepdim=True)
    for dtype, tol in [(F32, 1e-2), (F64, 1e-6)]:
        x = expmap0(v, c).to(dtype)
        torch.testing.assert_close(dist0(x, c).max().item(), 3.0 / math.sqrt(c), rtol=1e-4, atol=0)
        assert math.sqrt(c) * dist(x, x, c).abs().max() < tol
        assert math.sqrt(c) * torch.diagonal(pairwise_dist(x, x, c)).abs().max() < tol
        assert math.sqrt(c) * torch.diagonal(pairwise_dist(x, x.clone(), c)).abs().max() < tol
    # The paired form is exact for identical points.
    assert (dist(x, x, c) == 0).all()


@pytest.mark.parametrize("c", CURVATURES)
def test_symmetry_and_triangle_inequality(c):
    x = random_points(200, c=c, seed=16)
    y = random_points(200, c=c, seed=17)
    z = random_points(200, c=c, seed=18)
    dxy, dyz, dxz = dist(x, y, c), dist(y, z, c), dist(x, z, c)
    torch.testing.assert_close(dxy, dist(y, x, c), rtol=1e-12, atol=1e-12)
    assert (dxy > 0).all()
    assert (dxz <= dxy + dyz + 1e-10).all()
    # Pairwise matrix of a set with itself is symmetric.
    dm = pairwise_dist(x[:10], x[:10], c)
    torch.testing.assert_close(dm, dm.T)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", CURVATURES)
def test_expmap_logmap_roundtrip(c, dtype):
    g = _gen(19)
    v = torch.randn(30, 5, generator=g, dtype=F64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(30, 1, generator=g, dtype=F64) * 3.0
    v = (v / math.sqrt(c)).to(dtype)
    tol = 1e-4 if dtype == F32 else 1e-10
    x = expmap0(v, c)
    assert x.dtype == dtype
    full = to_hyperboloid(x, c)
    scale = 1.0 / c + (x * x).sum(-1)
    assert (manifold_residual(full, c) <= tol * scale).all()
    torch.testing.assert_close(logmap0(x, c), v, rtol=tol, atol=tol)
    torch.testing.assert_close(dist0(x, c), v.norm(dim=-1), rtol=tol, atol=tol)
    # Tiny vectors (Taylor branch) round-trip as well.
    tiny = v * 1e-4
    torch.testing.assert_close(logmap0(expmap0(tiny, c), c), tiny, rtol=tol, atol=0.0)


def test_expmap0_known_values():
    u = unit(3)
    for c in CURVATURES:
        x = expmap0(2.0 * u, c)
        expected = math.sinh(2.0 * math.sqrt(c)) / math.sqrt(c) * u
        torch.testing.assert_close(x, expected)
        torch.testing.assert_close(
            time_component(x, c),
            torch.tensor(math.cosh(2.0 * math.sqrt(c)) / math.sqrt(c), dtype=F64),
        )
    assert (expmap0(torch.zeros(2, 3), 1.0) == 0).all()
    assert (logmap0(torch.zeros(2, 3), 1.0) == 0).all()


def test_series_branch_matches_closed_form():
    # Just inside and outside the Taylor-series threshold (c |v|^2 = 1e-4), in float64, the
    # series must agree with sinh(r)/r and asinh(s)/s to rounding.
    u = unit(3, seed=42)
    for c in CURVATURES:
        for r in (1e-3, 9.9e-3, 1.01e-2, 5e-2):
            v = r / math.sqrt(c) * u
            expected = math.sinh(r) / r * v
            torch.testing.assert_close(expmap0(v, c), expected, rtol=1e-15, atol=0)
            expected = math.asinh(r) / r * v
            torch.testing.assert_close(logmap0(v, c), expected, rtol=1e-15, atol=0)


def test_expmap0_caps_radius():
    v = unit(4, dtype=F32) * 1e4
    for c in CURVATURES:
        x = expmap0(v, c)
        assert torch.isfinite(x).all()
        r = dist0(x, c).item()
        assert r == pytest.approx(lorentz.MAX_EXPMAP_RADIUS / math.sqrt(c), rel=1e-4)


def test_project_and_residual():
    x = random_points(5, c=2.0, seed=20)
    full = to_hyperboloid(x, 2.0)
    assert full.shape == (5, 5)
    assert manifold_residual(full, 2.0).max() < 1e-12
    bad = full.clone()
    bad[:, 0] *= 1.5
    assert (manifold_residual(bad, 2.0) > 0.1).all()
    torch.testing.assert_close(project(bad, 2.0), full)
    lower = full.clone()
    lower[:, 0] *= -1
    assert (manifold_residual(lower, 2.0) > 0.1).all()


# ------------------------------------------------------------------------- curvature consistency


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", CURVATURES)
def test_distance_along_a_ray(c, dtype):
    u = unit(4, seed=21, dtype=dtype)
    tol = 2e-3 if dtype == F32 else 1e-9
    for a, b in [(0.3, 1.7), (2.0, 0.5), (0.0, 1.0), (1.2, 1.25)]:
        a_, b_ = a / math.sqrt(c), b / math.sqrt(c)
        d = dist(expmap0(a_ * u, c), expmap0(b_ * u, c), c).item()
        assert d == pytest.approx(abs(a_ - b_), abs=tol / math.sqrt(c) + 1e-4 * abs(a_ - b_))
        # Opposite directions: the geodesic passes through the origin.
        d = dist(expmap0(a_ * u, c), expmap0(-b_ * u, c), c).item()
        assert d == pytest.approx(a_ + b_, abs=tol / math.sqrt(c) + 1e-4 * (a_ + b_))


@pytest.mark.parametrize("c", CURVATURES)
def test_distance_scales_with_curvature(c):
    x1 = random_points(10, c=1.0, seed=22)
    y1 = random_points(10, c=1.0, seed=23)
    # Scaling unit-hyperboloid points by 1/sqrt(c) maps them onto the curvature -c hyperboloid.
    xc, yc = x1 / math.sqrt(c), y1 / math.sqrt(c)
    torch.testing.assert_close(dist(xc, yc, c), dist(x1, y1, 1.0) / math.sqrt(c))
    torch.testing.assert_close(dist0(xc, c), dist0(x1, 1.0) / math.sqrt(c))
    torch.testing.assert_close(dist0(xc, c), dist(xc, torch.zeros_like(xc), c))
    torch.testing.assert_close(exterior_angle(xc, yc, c), exterior_angle(x1, y1, 1.0))


def test_curvature_tensor_receives_gradient():
    x = random_points(4, seed=24, dtype=F32)
    y = random_points(4, seed=25, dtype=F32)
    log_c = torch.zeros((), requires_grad=True)
    d = dist(x, y, log_c.exp()).sum()
    d.backward()
    # The gradient is d/d(log c) of the distances: a central difference in float64.
    h, x64, y64 = 1e-5, x.double(), y.double()
    numeric = (dist(x64, y64, math.exp(h)).sum() - dist(x64, y64, math.exp(-h)).sum()) / (2 * h)
    assert log_c.grad is not None and abs(float(numeric)) > 0.1
    assert log_c.grad.item() == pytest.approx(float(numeric), rel=1e-4)
    assert dist(x, y, torch.tensor(1.0, dtype=F64)).dtype == F32


# ------------------------------------------------------------------- finite gradients, float32


@pytest.mark.parametrize("c", CURVATURES)
def test_finite_gradients_at_singular_points_float32(c):
    x = random_points(6, radius=2.0 / math.sqrt(c), c=c, dtype=F32, seed=26)
    zero = torch.zeros(3, 4, dtype=F32)
    # Identical points (same tensor and separate copies).
    assert_finite_grad(lambda a: dist(a, a, c), x)
    assert_finite_grad(lambda a, b: dist(a, b, c), x, x.clone())
    assert_finite_grad(lambda a: pairwise_dist(a, a, c), x)
    assert_finite_grad(lambda a, b: pairwise_dist(a, b, c), x, x.clone())
    # Zero vectors.
    assert_finite_grad(lambda a: expmap0(a, c), zero)
    assert_finite_grad(lambda a: logmap0(a, c), zero)
    assert_finite_grad(lambda a: dist0(a, c), zero)
    assert_finite_grad(lambda a, b: dist(a, b, c), zero, zero.clone())
    assert_finite_grad(lambda a, b: pairwise_dist(a, b, c), zero, zero.clone())
    assert_finite_grad(lambda a: half_aperture(a, c), zero)
    assert_finite_grad(lambda a, b: exterior_angle(a, b, c), zero, x[:3])
    assert_finite_grad(lambda a, b: centroid(a, c, weights=b), zero, torch.ones(3))
    # Exterior angle at 0 (child beyond parent on the ray), pi (child toward the origin) and
    # at identical points.
    for scale in (2.0, 0.5, 1.0):
        assert_finite_grad(lambda a, b: exterior_angle(a, b, c), x, x * scale)
        assert_finite_grad(lambda a, b: pairwise_exterior_angle(a, b, c), x, x * scale)
        assert_finite_grad(lambda a, b: entailment_loss(a, b, c), x, x * scale)


@pytest.mark.parametrize("norm", [1e3, 1e4])
@pytest.mark.parametrize("c", CURVATURES)
def test_finite_gradients_large_inputs_float32(c, norm):
    g = _gen(27)
    x = torch.randn(5, 4, generator=g)
    x = x / x.norm(dim=-1, keepdim=True) * norm
    y = torch.randn(5, 4, generator=g)
    y = y / y.norm(dim=-1, keepdim=True) * norm
    assert_finite_grad(lambda a, b: dist(a, b, c), x, y)
    assert_finite_grad(lambda a, b: pairwise_dist(a, b, c), x, y)
    assert_finite_grad(lambda a: dist0(a, c), x)
    assert_finite_grad(lambda a: logmap0(a, c), x)
    assert_finite_grad(lambda a: expmap0(a, c), x)
    assert_finite_grad(lambda a, b: exterior_angle(a, b, c), x, y)
    assert_finite_grad(lambda a, b: pairwise_exterior_angle(a, b, c), x, y)
    assert_finite_grad(lambda a, b: entailment_loss(a, b, c), x, y)
    assert_finite_grad(lambda a: centroid(a, c), x)
    # Values stay meaningful: the radius of a point of norm N is asinh(sqrt(c) N)/sqrt(c).
    expected = math.asinh(math.sqrt(c) * norm) / math.sqrt(c)
    torch.testing.assert_close(dist0(x, c), torch.full((5,), expected), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------ exterior angle


def _ball(x, c):
    """Poincare-ball coordinates (a conformal model) of hyperboloid points."""
    return x / (1.0 + math.sqrt(c) * time_component(x, c)).unsqueeze(-1)


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_exterior_angle_matches_geometric_construction(c):
    # The Poincare ball is conformal, so the angle at x equals the Euclidean angle in the ball
    # between the radial direction (a straight line through the origin) and the tangent of
    # the geodesic x -> y, estimated by a finite difference along the geodesic.  Points of the
    # geodesic are normalised positive combinations of X and Y (centroid with two weights).
    x = random_points(20, radius=1.5 / math.sqrt(c), c=c, seed=28)
    # Children around the ray through x, from behind x to beyond it, with a spread of offsets.
    g = _gen(29)
    along = torch.linspace(-0.5, 2.5, 20, dtype=F64)[:, None]
    offset = torch.randn(20, 4, generator=g, dtype=F64) * torch.linspace(0.5, 0.01, 20)[:, None]
    y = expmap0(logmap0(x, c) * along + offset / math.sqrt(c), c)
    pts = torch.stack([x, y], dim=0)

    def along_geodesic(lam):
        w = torch.tensor([1.0 - lam, lam], dtype=F64)[:, None].expand(2, 20)
        return _ball(centroid(pts, c, weights=w, dim=0), c)

    # Central difference (a small negative weight extends the geodesic behind x).
    step = along_geodesic(1e-6) - along_geodesic(-1e-6)
    radial = _ball(x, c)
    cos = (step * radial).sum(-1) / (step.norm(dim=-1) * radial.norm(dim=-1))
    expected = torch.acos(cos)
    torch.testing.assert_close(exterior_angle(x, y, c), expected, rtol=0, atol=1e-5)
    assert expected.min() < 0.5 and expected.max() > 2.5  # a spread of angles was tested


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", CURVATURES)
def test_exterior_angle_on_the_ray(c, dtype):
    u = unit(4, seed=30, dtype=dtype)
    x = expmap0(1.0 / math.sqrt(c) * u, c)
    tol = 3e-3 if dtype == F32 else 1e-5
    beyond = expmap0(2.0 / math.sqrt(c) * u, c)
    back = expmap0(0.4 / math.sqrt(c) * u, c)
    assert exterior_angle(x, beyond, c).item() < tol
    assert exterior_angle(x, back, c).item() > math.pi - tol
    assert exterior_angle(x, torch.zeros_like(x), c).item() > math.pi - tol
    # Off the ray: pi minus the triangle's angle at x, from the hyperbolic law of cosines
    # cosh e = cosh a cosh b - sinh a sinh b cos(theta) (sides in units of 1/sqrt(c)).
    y = expmap0(unit(4, seed=31, dtype=dtype), c)
    x64, y64 = x.double(), y.double()
    a, b, e = (math.sqrt(c) * float(v) for v in (dist0(x64, c), dist(x64, y64, c), dist0(y64, c)))
    theta = math.acos((math.cosh(a) * math.cosh(b) - math.cosh(e)) / (math.sinh(a) * math.sinh(b)))
    side = exterior_angle(x, y, c).item()
    assert side == pytest.approx(math.pi - theta, abs=1e-5 if dtype == F32 else 1e-12)
    assert tol < side < math.pi - tol  # a direction that is neither 0 nor pi


def test_half_aperture_values():
    for c in CURVATURES:
        u = unit(3)
        x = torch.stack([u * r for r in (0.5, 1.0, 5.0)]) / math.sqrt(c)
        expected = torch.asin(0.2 / torch.tensor([0.5, 1.0, 5.0], dtype=F64))
        torch.testing.assert_close(half_aperture(x, c, min_radius=0.1), expected)
        # Inside radius 2K/sqrt(c) the aperture saturates just below pi/2.
        inside = half_aperture(0.1 * u / math.sqrt(c), c, min_radius=0.1)
        assert math.pi / 2 - 1e-5 < inside.item() < math.pi / 2
    # Larger points have narrower cones.
    assert half_aperture(torch.tensor([3.0, 0.0]), 1.0) < half_aperture(
        torch.tensor([1.0, 0]), 1.0
    )


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("c", CURVATURES)
def test_entailment_loss(c, dtype):
    u = unit(4, seed=32, dtype=dtype)
    parent = expmap0(1.0 / math.sqrt(c) * u, c)
    child_on_ray = expmap0(2.5 / math.sqrt(c) * u, c)
    child_opposite = expmap0(-1.0 / math.sqrt(c) * u, c)
    assert entailment_loss(parent, child_on_ray, c).item() == 0.0
    loss = entailment_loss(parent, child_opposite, c).item()
    expected = math.pi - half_aperture(parent, c).item()
    assert loss > 1.0
    assert loss == pytest.approx(expected, abs=5e-3)
    # Batched and unreduced.
    batch = entailment_loss(
        parent.expand(3, 4), torch.stack([child_on_ray, child_opposite, parent * 3]), c
    )
    assert batch.shape == (3,)
    assert batch[0] == 0 and batch[1].item() == pytest.approx(loss, rel=1e-6) and batch[2] == 0


# ----------------------------------------------------------------------------------- centroid


@pytest.mark.parametrize("c", CURVATURES)
def test_centroid(c):
    x = random_points(1, c=c, seed=33)
    torch.testing.assert_close(centroid(x, c), x[0])
    # Two symmetric points: the centroid is the origin.
    v = unit(4, seed=34) / math.sqrt(c)
    pair = torch.stack([expmap0(v, c), expmap0(-v, c)])
    torch.testing.assert_close(centroid(pair, c), torch.zeros(4, dtype=F64), atol=1e-12, rtol=0)
    # Two arbitrary points: the centroid is the geodesic midpoint.
    a, b = random_points(2, c=c, seed=35)
    m = centroid(torch.stack([a, b]), c)
    dab = dist(a, b, c)
    torch.testing.assert_close(dist(m, a, c), dab / 2)
    torch.testing.assert_close(dist(m, b, c), dab / 2)
    # A heavier weight pulls the centroid toward its point, still on the geodesic.
    mw = centroid(torch.stack([a, b]), c, weights=torch.tensor([3.0, 1.0], dtype=F64))
    assert dist(mw, a, c) < dist(mw, b, c)
    torch.testing.assert_close(dist(mw, a, c) + dist(mw, b, c), dab)
    # The centroid minimises the sum of squared Lorentzian distances, so the weight scale
    # does not matter.
    torch.testing.assert_close(
        mw, centroid(torch.stack([a, b]), c, weights=torch.tensor([30.0, 10.0], dtype=F64))
    )


def test_centroid_batched_dim():
    x = random_points(12, seed=36).reshape(3, 4, 4)
    m = centroid(x, 1.0, dim=1)
    assert m.shape == (3, 4)
    for i in range(3):
        torch.testing.assert_close(m[i], centroid(x[i], 1.0))
    w = torch.rand(4, generator=_gen(37), dtype=F64)
    mw = centroid(x, 1.0, weights=w, dim=1)
    torch.testing.assert_close(mw[1], centroid(x[1], 1.0, weights=w))
    with pytest.raises(ValueError):
        centroid(x, 1.0, dim=-1)


# ------------------------------------------------------------------------------- conventions


def test_dtype_preserved_and_eps():
    assert lorentz.eps_for(F32) >= 1e-6
    assert lorentz.eps_for(F64) < lorentz.eps_for(F32)
    assert float(torch.tensor(1.0 - lorentz.EPS_FLOAT32, dtype=F32)) < 1.0
    for dtype in (F32, F64):
        x = random_points(3, dtype=dtype, seed=38)
        y = random_points(3, dtype=dtype, seed=39)
        outs = [
            time_component(x, 1.0),
            expmap0(x, 1.0),
            logmap0(x, 1.0),
            inner(x, y, 1.0),
            pairwise_inner(x, y, 1.0),
            dist(x, y, 1.0),
            pairwise_dist(x, y, 1.0),
            dist0(x, 1.0),
            half_aperture(x, 1.0),
            exterior_angle(x, y, 1.0),
            pairwise_exterior_angle(x, y, 1.0),
            entailment_loss(x, y, 1.0),
            centroid(x, 1.0),
        ]
        for out in outs:
            assert out.dtype == dtype
            assert torch.isfinite(out).all()


def test_broadcasting_paired():
    x = random_points(4, seed=40)
    y = random_points(5, seed=41)
    d = dist(x[:, None, :], y[None, :, :], 1.0)
    assert d.shape == (4, 5)
    torch.testing.assert_close(d, pairwise_dist(x, y, 1.0))
    # One point against a batch.
    torch.testing.assert_close(dist(x[0], y, 1.0), pairwise_dist(x[:1], y, 1.0)[0])
