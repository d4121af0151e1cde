"""Pure tiling arithmetic: tile origins, blending weights, finished rows, option checks."""

import numpy as np
import pytest

from sarmae_cli.errors import UsageError
from sarmae_cli.infer.tiling import (
    Grid,
    axis_weight,
    check_tiling,
    output_size,
    ramp,
    tile_origins,
    tile_weight,
)


@pytest.mark.parametrize("n", [1, 5, 31, 32, 33, 63, 64, 100, 1000])
@pytest.mark.parametrize("tile,stride", [(32, 24), (32, 32), (16, 1)])
def test_origins_cover_the_axis(n, tile, stride):
    for layout in ("edge", "regular"):
        o = tile_origins(n, tile, stride, layout)
        covered = np.zeros(max(n, o[-1] + tile), bool)
        for s in o:
            covered[s : s + tile] = True
        assert covered[:n].all()
        assert o == sorted(set(o)) and o[0] == 0
        assert all(b - a <= stride for a, b in zip(o, o[1:], strict=False))
        if layout == "edge":
            assert o[-1] + tile == max(n, tile)  # ends at the edge; inside unless n < tile
        else:
            assert all(s % stride == 0 for s in o) and o[-1] < n


def test_origins_examples():
    assert tile_origins(100, 32, 24) == [0, 24, 48, 68]
    assert tile_origins(100, 32, 24, "regular") == [0, 24, 48, 72]
    assert tile_origins(20, 32, 24) == [0]
    with pytest.raises(ValueError):
        tile_origins(0, 32, 24)


def test_ramp_is_positive_and_partitions_unity():
    r = ramp(8)
    assert (r > 0).all() and (r < 1).all()
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)


def test_weights_positive_and_flat_on_scene_borders():
    w = tile_weight(32, 8, 0, 0, 3, 3)
    assert (w > 0).all()
    assert w[0, 0] == 1.0 and w[0, -1] < 0.01 and w[-1, 0] < 0.01  # top-left corner tile
    alone = tile_weight(32, 8, 0, 0, 1, 1)
    assert (alone == 1).all()
    mid = axis_weight(32, 8, first=False, last=False)
    assert mid.min() > 0 and mid[8:24].min() == 1.0


def test_two_overlapping_tiles_blend_to_constant_weight_sum():
    tile, ov = 32, 8
    total = np.zeros(56)
    total[:32] += axis_weight(tile, ov, True, False)
    total[24:] += axis_weight(tile, ov, False, True)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_finished_rows_partition_the_raster():
    for h in (10, 32, 33, 100, 257):
        g = Grid(h, 50, 32, 8)
        spans = [g.finished_rows(r) for r in range(g.shape[0])]
        assert spans[0][0] == 0 and spans[-1][1] == h
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert all(y1 - y0 <= g.tile for y0, y1 in spans)


def test_check_tiling_errors():
    check_tiling(32, 8, 16)
    with pytest.raises(UsageError, match="smaller than the model's patch size 16"):
        check_tiling(8, 0, 16)
    with pytest.raises(UsageError, match="not a multiple of the model's patch size 16"):
        check_tiling(40, 0, 16)
    with pytest.raises(UsageError, match="smaller than --tile"):
        check_tiling(32, 32, 16)
    assert output_size(33, 16) == 3
