"""point_sample (mmcv semantics) and the uncertainty point sampler (mmdet semantics) against NumPy."""
import jittor as jt
import numpy as np
import pytest

from jseg.models.utils.point_sample import get_uncertain_point_coords_with_randomness, point_sample


def bilinear_weights(points, height, width):
    """(P, H*W) matrix W with samples = W @ map.ravel(): bilinear, align_corners=False, zeros outside."""
    weights = np.zeros((len(points), height * width))
    for p, (x, y) in enumerate(points):
        px, py = x * width - 0.5, y * height - 0.5                     # pixel-centre coordinates
        x0, y0 = int(np.floor(px)), int(np.floor(py))
        for xi, wx in ((x0, x0 + 1 - px), (x0 + 1, px - x0)):
            for yi, wy in ((y0, y0 + 1 - py), (y0 + 1, py - y0)):
                if 0 <= xi < width and 0 <= yi < height:
                    weights[p, yi * width + xi] += wx * wy
    return weights


def numpy_point_sample(maps, points):
    n, c, h, w = maps.shape
    return np.stack([maps[i].reshape(c, -1) @ bilinear_weights(points[i], h, w).T for i in range(n)])


@pytest.fixture(scope='module')
def maps_and_points():
    rng = np.random.RandomState(0)
    maps = rng.standard_normal((2, 3, 4, 6)).astype(np.float32)
    points = rng.rand(2, 7, 2).astype(np.float32)
    # edges and corners: 0 and 1 lie half a pixel outside the border centres (zero padding enters)
    points[0, :4] = [[0.0, 0.0], [1.0, 1.0], [0.0, 0.5], [1 / 12, 1 / 8]]
    return maps, points


def test_point_sample_matches_bilinear_with_zero_padding(maps_and_points):
    maps, points = maps_and_points
    out = point_sample(jt.array(maps), jt.array(points)).numpy()
    assert out.shape == (2, 3, 7)
    np.testing.assert_allclose(out, numpy_point_sample(maps, points), rtol=1e-5, atol=1e-6)
    # the point (1/12, 1/8) is the centre of pixel (0, 0): exact read
    np.testing.assert_allclose(out[0, :, 3], maps[0, :, 0, 0], rtol=1e-5, atol=1e-6)
    # the corner (0, 0) averages one real pixel with three zeros
    np.testing.assert_allclose(out[0, :, 0], maps[0, :, 0, 0] / 4, rtol=1e-5, atol=1e-6)


def test_point_sample_grid_points_and_input_gradient(maps_and_points):
    maps, points = maps_and_points
    grid = points.reshape(2, 7, 1, 2)
    x = jt.array(maps)
    out = point_sample(x, jt.array(grid))
    assert out.shape == (2, 3, 7, 1)
    rng = np.random.RandomState(1)
    upstream = rng.standard_normal((2, 3, 7, 1)).astype(np.float32)
    grad = jt.grad((out * jt.array(upstream)).sum(), x).numpy()
    expected = np.stack([(upstream[i, :, :, 0] @ bilinear_weights(points[i], 4, 6)).reshape(3, 4, 6)
                         for i in range(2)])
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_point_sample_rejects_bad_shapes(maps_and_points):
    maps, points = maps_and_points
    with pytest.raises(ValueError, match='points must be'):
        point_sample(jt.array(maps), jt.array(points[..., :1]))
    with pytest.raises(ValueError, match='input must be'):
        point_sample(jt.array(maps[:1]), jt.array(points))


class Recorder:
    """An injectable ``rand`` that records its draws."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.draws = []

    def __call__(self, shape):
        self.draws.append(self.rng.rand(*shape).astype(np.float32))
        return self.draws[-1]


@pytest.mark.parametrize('num_points, oversample, importance', [(8, 3.0, 0.75), (6, 2.0, 1.0)])
def test_uncertain_points_follow_mmdet_rule(num_points, oversample, importance):
    rng = np.random.RandomState(2)
    logits = rng.standard_normal((2, 1, 4, 6)).astype(np.float32)
    rand = Recorder(3)
    coords = get_uncertain_point_coords_with_randomness(jt.array(logits), num_points, oversample, importance,
                                                        rand=rand).numpy()
    num_sampled, num_kept = int(num_points * oversample), int(importance * num_points)
    assert [d.shape for d in rand.draws] == [(2, num_sampled, 2)] + (
        [(2, num_points - num_kept, 2)] if num_kept < num_points else [])
    assert coords.shape == (2, num_points, 2)
    sampled = numpy_point_sample(logits, rand.draws[0])[:, 0]           # (2, S)
    for i in range(2):
        order = np.argsort(np.abs(sampled[i]), kind='stable')[:num_kept]  # smallest |logit| first
        np.testing.assert_array_equal(coords[i, :num_kept], rand.draws[0][i, order])
        if num_kept < num_points:
            np.testing.assert_array_equal(coords[i, num_kept:], rand.draws[1][i])


def test_uncertain_points_default_rand_and_bad_ratios():
    logits = jt.zeros((2, 1, 4, 6))
    coords = get_uncertain_point_coords_with_randomness(logits, 8, 3.0, 0.75).numpy()
    assert coords.shape == (2, 8, 2) and coords.min() >= 0 and coords.max() < 1
    with pytest.raises(ValueError, match='oversample_ratio'):
        get_uncertain_point_coords_with_randomness(logits, 8, 0.5, 0.75)
    with pytest.raises(ValueError, match='importance_sample_ratio'):
        get_uncertain_point_coords_with_randomness(logits, 8, 3.0, 1.5)
    with pytest.raises(ValueError, match=r'\(N, 1, H, W\)'):
        get_uncertain_point_coords_with_randomness(jt.zeros((2, 2, 4, 6)), 8, 3.0, 0.75)


def test_uncertain_points_leave_the_callers_gradient_alone():
    # Sampling points must not cut the gradient of the masks it looks at (Jittor's stop_grad()
    # marks a Var in place): the caller samples the same masks again for the loss.
    masks = jt.array(np.random.RandomState(3).standard_normal((2, 1, 4, 6)).astype(np.float32))
    get_uncertain_point_coords_with_randomness(masks, 4, 2.0, 0.5)
    grad = jt.grad(masks.sum() * 2.0, masks)
    np.testing.assert_allclose(grad.numpy(), np.full((2, 1, 4, 6), 2.0, np.float32))
