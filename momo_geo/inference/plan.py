"""The tiling plan: which windows of a scene the model sees, and which pixels each one owns.

Tiles step by ``tile - overlap``; the last row and column of tiles are clamped to the raster edge
(never padded past it), so every tile has the same size and batches stack. Each tile owns a
*core*: its part of the scene that no other tile writes. Neighbouring cores meet in the middle of
their overlap, so a model whose receptive field reaches ``overlap // 2`` pixels sees the same
context at every seam as it would on the whole scene, and the cores together cover every pixel
exactly once. This is what makes tiled output equal untiled output for a translation-equivariant
model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window

from momo_geo.errors import MomoGeoError


@dataclass(frozen=True)
class TilePlan:
    """One tile: the window read (``row, col, height, width``) and the core it writes.

    ``core_*`` are absolute scene coordinates; ``tile_row``/``tile_col`` index the tile grid.
    """

    tile_row: int
    tile_col: int
    row: int
    col: int
    height: int
    width: int
    core_row: int
    core_col: int
    core_height: int
    core_width: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.width, self.height)

    @property
    def core_window(self) -> Window:
        return Window(self.core_col, self.core_row, self.core_width, self.core_height)

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        """Slices of the tile array that hold the core (rows, cols)."""
        r0 = self.core_row - self.row
        c0 = self.core_col - self.col
        return slice(r0, r0 + self.core_height), slice(c0, c0 + self.core_width)


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: a regular step, the last one clamped to the edge."""
    check_tiling(tile, overlap)
    if length <= 0:
        raise MomoGeoError("cannot tile an empty raster")
    size = min(tile, length)
    step = tile - overlap
    starts = list(range(0, max(length - size, 0) + 1, step))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def axis_cores(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, core_start, core_stop)`` per tile along one axis.

    The boundary between two neighbouring cores is the midpoint of their overlap; the first core
    starts at 0 and the last ends at ``length``, so cores partition ``[0, length)``.
    """
    starts = axis_starts(length, tile, overlap)
    size = min(tile, length)
    bounds = [0]
    for left, right in zip(starts, starts[1:], strict=False):
        bounds.append((right + left + size) // 2)
    bounds.append(length)
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 1:
        raise MomoGeoError(f"tile size must be at least 1 pixel, not {tile}")
    if overlap < 0 or overlap >= tile:
        raise MomoGeoError(f"overlap must be between 0 and tile size - 1 ({tile - 1}), "
                           f"not {overlap}")


def plan_shape(width: int, height: int, tile: int, overlap: int) -> tuple[int, int]:
    """Number of tile rows and columns."""
    return (len(axis_starts(height, tile, overlap)), len(axis_starts(width, tile, overlap)))


def plan_tiles(width: int, height: int, tile: int, overlap: int) -> Iterator[TilePlan]:
    """Tiles of a ``width`` x ``height`` raster in row-major order (a lazy iterator).

    Row-major order is what the row-band stitcher relies on: when a tile row is done, the rows
    its cores cover are final and can be written.
    """
    rows = axis_cores(height, tile, overlap)
    cols = axis_cores(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    for i, (r, cr0, cr1) in enumerate(rows):
        for j, (c, cc0, cc1) in enumerate(cols):
            yield TilePlan(i, j, r, c, th, tw, cr0, cc0, cr1 - cr0, cc1 - cc0)
