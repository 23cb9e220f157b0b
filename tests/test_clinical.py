"""Hotspot search against brute force, HPF rescaling and the Nottingham mitotic score table."""

import itertools
import math

import numpy as np
import pytest

from wsimito.errors import WsimitoError
from wsimito.evaluation import (
    NOTTINGHAM_CUTOFFS,
    count_per_10_hpf,
    find_hotspot,
    mitoses_per_mm2,
    mitotic_score,
    nottingham_cutoffs,
    slide_summary,
)

# mpp 1 µm/px makes 1 mm² = 1e6 px²: a square of side s px has area s² / 1e6 mm²
MPP = 1.0


def area_of_square(side_px):
    return side_px**2 / 1e6


def area_of_circle(radius_px):
    return math.pi * radius_px**2 / 1e6


def in_square(points, x0, y0, side):
    x, y = points[:, 0], points[:, 1]
    return int(np.sum((x >= x0) & (x <= x0 + side) & (y >= y0) & (y <= y0 + side)))


def in_circle(points, centre, radius):
    return int(np.sum(np.hypot(*(points - np.asarray(centre)).T) <= radius * (1 + 1e-9)))


def test_square_hotspot_against_exhaustive_search():
    """Integer points and an integer side: every integer corner in range is every distinct window."""
    rng = np.random.default_rng(0)
    for trial in range(25):
        points = rng.integers(0, 40, (rng.integers(1, 35), 2)).astype(float)
        side = int(rng.integers(3, 15))
        bounds = None if trial % 2 else (2, 3, 38, 35)
        corners = itertools.product(range(-side, 41), repeat=2)
        if bounds:
            corners = [(x, y) for x, y in corners
                       if bounds[0] <= x <= bounds[2] - side and bounds[1] <= y <= bounds[3] - side]
        brute = max(in_square(points, x, y, side) for x, y in corners)
        hotspot = find_hotspot(points, MPP, area_mm2=area_of_square(side), shape="square", bounds=bounds)
        x0, y0, x1, y1 = hotspot.window
        assert hotspot.count == brute == in_square(points, x0, y0, side)
        assert x1 - x0 == pytest.approx(side) and y1 - y0 == pytest.approx(side)
        assert hotspot.centre == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2))
        if bounds:
            assert bounds[0] <= x0 and x1 <= bounds[2] + 1e-9 and bounds[1] <= y0 and y1 <= bounds[3] + 1e-9
        assert hotspot.fits and hotspot.reason == ""


def _brute_force_circle(points, radius):
    """Every centre with two points on the edge, and every point as a centre."""
    centres = list(points)
    for a, b in itertools.combinations(points, 2):
        d = math.dist(a, b)
        if 0 < d <= 2 * radius:
            middle, h = (a + b) / 2, math.sqrt(max(0.0, radius**2 - d**2 / 4))
            normal = np.array([b[1] - a[1], a[0] - b[0]]) / d
            centres += [middle + h * normal, middle - h * normal]
    return max(in_circle(points, c, radius) for c in centres)


def test_circle_hotspot_against_brute_force_and_random_probes():
    rng = np.random.default_rng(1)
    for _ in range(25):
        points = rng.uniform(0, 100, (rng.integers(1, 35), 2))
        radius = float(rng.uniform(5, 30))
        hotspot = find_hotspot(points, MPP, area_mm2=area_of_circle(radius), shape="circle")
        cx, cy, r = hotspot.window
        assert r == pytest.approx(radius) and (cx, cy) == hotspot.centre
        assert hotspot.count == _brute_force_circle(points, radius) == in_circle(points, hotspot.centre, radius)
        probes = rng.uniform(-30, 130, (2000, 2))
        distances = np.hypot(probes[:, None, 0] - points[None, :, 0], probes[:, None, 1] - points[None, :, 1])
        assert (distances <= radius).sum(axis=1).max() <= hotspot.count


def test_circle_hotspot_within_bounds_against_a_dense_grid():
    rng = np.random.default_rng(2)
    bounds = (10.0, 5.0, 90.0, 80.0)
    for _ in range(12):
        points = rng.uniform(0, 100, (rng.integers(1, 30), 2))
        radius = float(rng.uniform(8, 25))
        hotspot = find_hotspot(points, MPP, area_mm2=area_of_circle(radius), shape="circle", bounds=bounds)
        cx, cy = hotspot.centre
        assert bounds[0] + radius - 1e-6 <= cx <= bounds[2] - radius + 1e-6
        assert bounds[1] + radius - 1e-6 <= cy <= bounds[3] - radius + 1e-6
        assert hotspot.count == in_circle(points, hotspot.centre, radius)
        gx, gy = np.meshgrid(np.linspace(bounds[0] + radius, bounds[2] - radius, 200),
                             np.linspace(bounds[1] + radius, bounds[3] - radius, 200))
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        distances = np.hypot(grid[:, None, 0] - points[None, :, 0], grid[:, None, 1] - points[None, :, 1])
        assert (distances <= radius).sum(axis=1).max() <= hotspot.count
        unbounded = find_hotspot(points, MPP, area_mm2=area_of_circle(radius), shape="circle")
        assert hotspot.count <= unbounded.count


def test_hotspot_geometry_in_micrometres():
    """2 mm² at 0.25 µm/px: a square of sqrt(2) mm = 5656.85 px, a circle of radius 3191.5 px."""
    points = np.array([[0.0, 0.0], [5656.0, 5656.0], [5658.0, 0.0]])
    square = find_hotspot(points, 0.25, area_mm2=2.0, shape="square")
    x0, y0, x1, y1 = square.window
    assert x1 - x0 == pytest.approx(math.sqrt(2) * 4000) and square.count == 2
    assert square.per_mm2 == 1.0
    circle = find_hotspot(points, 0.25, area_mm2=2.0, shape="circle")
    assert circle.window[2] == pytest.approx(math.sqrt(2 / math.pi) * 4000) and circle.count == 2


def test_tissue_or_bounds_smaller_than_the_hotspot_are_flagged():
    points = np.array([[100.0, 100.0], [200.0, 300.0]])
    small = find_hotspot(points, 0.25, area_mm2=2.0, tissue_mm2=0.8)
    assert not small.fits and "tissue area 0.8 mm² is smaller than the 2 mm² hotspot" in small.reason
    assert small.count == 2
    cramped = find_hotspot(points, 0.25, area_mm2=2.0, shape="circle", bounds=(0, 0, 2000, 2000))
    assert not cramped.fits and "cannot hold the 2 mm² circle" in cramped.reason and cramped.count == 2
    assert find_hotspot(points, 0.25, area_mm2=2.0, tissue_mm2=2.5).fits


def test_hotspot_edge_cases():
    empty = find_hotspot(np.zeros((0, 2)), 0.25)
    assert empty.count == 0 and empty.per_mm2 == 0
    same = find_hotspot(np.array([[5.0, 5.0]] * 4), 0.25, shape="circle")
    assert same.count == 4
    with pytest.raises(WsimitoError, match="hotspot shape"):
        find_hotspot(np.zeros((0, 2)), 0.25, shape="hexagon")
    with pytest.raises(WsimitoError, match="positive mpp"):
        find_hotspot(np.zeros((0, 2)), 0)


def test_hotspot_is_fast_for_thousands_of_points():
    rng = np.random.default_rng(3)
    points = np.concatenate([rng.uniform(0, 60000, (2900, 2)), rng.normal(30000, 800, (100, 2))])
    for shape in ("square", "circle"):
        hotspot = find_hotspot(points, 0.25, area_mm2=2.0, shape=shape)
        assert hotspot.count >= 100 * 0.6  # the planted cluster (sd 0.2 mm) is found


def test_density_and_ten_fields():
    assert mitoses_per_mm2(10, 4.0) == 2.5 and math.isnan(mitoses_per_mm2(3, 0))
    ten_fields = 10 * math.pi * 0.25**2  # 1.963 mm² for 0.50 mm fields
    assert count_per_10_hpf(12, ten_fields, 0.5) == pytest.approx(12)
    assert count_per_10_hpf(12, 2.0, 0.5) == pytest.approx(12 * ten_fields / 2)


def test_nottingham_table_follows_elston_ellis_by_field_area():
    """Each row: cut-offs 10 and 20 for 0.274 mm² fields, scaled by the row's field area (to 0.001 mm²)."""
    assert [row[0] for row in NOTTINGHAM_CUTOFFS] == pytest.approx([d / 100 for d in range(40, 70)])
    for diameter, max_score1, min_score3 in NOTTINGHAM_CUTOFFS:
        scale = round(math.pi * diameter**2 / 4, 3) / 0.274
        assert max_score1 == math.ceil(10 * scale) - 1, diameter
        assert min_score3 == math.ceil(20 * scale), diameter


@pytest.mark.parametrize(
    "diameter, boundaries",
    [(0.50, (7, 8, 14, 15)), (0.44, (5, 6, 11, 12)), (0.59, (9, 10, 19, 20)), (0.69, (13, 14, 27, 28)),
     (0.40, (4, 5, 9, 10))],
)
def test_mitotic_score_boundaries(diameter, boundaries):
    last1, first2, last2, first3 = boundaries
    assert [mitotic_score(c, diameter) for c in (0, last1, first2, last2, first3, 100)] == [1, 1, 2, 2, 3, 3]


def test_mitotic_score_rounding_and_nearest_row():
    assert mitotic_score(7.49, 0.5) == 1 and mitotic_score(7.5, 0.5) == 2
    assert mitotic_score(14.49, 0.5) == 2 and mitotic_score(14.5, 0.5) == 3
    assert nottingham_cutoffs(0.503) == (0.50, 7, 15)
    assert nottingham_cutoffs(0.5449) == (0.54, 8, 17)
    assert nottingham_cutoffs(0.396)[0] == 0.40 and nottingham_cutoffs(0.694)[0] == 0.69
    for outside in (0.39, 0.70, 1.0):
        with pytest.raises(WsimitoError, match="outside the Nottingham table"):
            mitotic_score(10, outside)


def test_slide_summary():
    rng = np.random.default_rng(4)
    cluster = rng.uniform(10000, 13000, (18, 2))  # 0.75 mm square at 0.25 µm/px: inside one 2 mm² window
    scattered = np.array([[0.0, 0.0], [40000.0, 40000.0]])
    summary = slide_summary(np.concatenate([cluster, scattered]), 0.25, tissue_mm2=50.0, field_diameter_mm=0.5)
    assert summary["mitoses"] == 20 and summary["mitoses_per_mm2"] == pytest.approx(0.4)
    assert summary["hotspot_count"] == 18 and summary["hotspot_fits"] and summary["hotspot_note"] == ""
    assert summary["mitoses_per_10_hpf"] == pytest.approx(18 * 10 * math.pi * 0.25**2 / 2)  # 17.67
    assert summary["mitotic_score"] == 3
