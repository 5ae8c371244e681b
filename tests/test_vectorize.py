"""Block-wise polygonisation: seams merged, holes kept, Mars measurements, three formats."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from momo_geo.bundle import ClassInfo
from momo_geo.crs import body_of
from momo_geo.errors import MomoGeoError
from momo_geo.vectorize import fit_circle, vectorize

CLASSES = [ClassInfo(0, "background", "#000000"), ClassInfo(1, "crater", "#ff0000"),
           ClassInfo(2, "dune", "#00ff00")]
GSD = 20.0


def write_mask(path: Path, mask: np.ndarray, crs="IAU_2015:49910",
               transform=None, dtype="uint8", nodata=255) -> Path:
    transform = transform or from_origin(100_000.0, 600_000.0, GSD, GSD)
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype=dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(mask.astype(dtype), 1)
    return path


def disc(mask: np.ndarray, cy: float, cx: float, r: float, value: int) -> None:
    rows, cols = np.indices(mask.shape)
    mask[(rows + 0.5 - cy) ** 2 + (cols + 0.5 - cx) ** 2 <= r * r] = value


def busy_mask() -> np.ndarray:
    """Features of every awkward kind: across many seams, rings with holes, diagonal touches."""
    rng = np.random.default_rng(1)
    mask = np.zeros((97, 131), np.uint8)
    mask[5:90, 60:64] = 2                      # a long dune crossing every row seam
    disc(mask, 40, 30, 20, 1)
    disc(mask, 40, 30, 9, 0)                   # ...a crater ring with a hole
    disc(mask, 40, 30, 4, 1)                   # ...and an island inside the hole
    mask[70:72, 100:102] = 1
    mask[72:74, 102:104] = 1                   # touches the block above only at a corner
    noise = rng.random(mask.shape) > 0.93
    mask[noise & (mask == 0)] = 1
    mask[0:3, :] = 255                         # nodata rows
    return mask


def pixel_outlines(path: Path, transform) -> list[tuple[int, shapely.Geometry]]:
    frame = gpd.read_file(path)
    inverse = ~transform
    out = []
    for class_id, geom in zip(frame.class_id, frame.geometry, strict=True):
        pix = shapely.transform(geom, lambda xy: np.column_stack(
            inverse @ (xy[:, 0], xy[:, 1])))
        out.append((int(class_id), shapely.normalize(pix)))
    return sorted(out, key=lambda item: (item[0], item[1].wkt))


@pytest.mark.parametrize("block", [7, 16, 50])
def test_block_seams_are_merged_exactly(tmp_path, block):
    mask_path = write_mask(tmp_path / "mask.tif", busy_mask())
    one = vectorize(mask_path, tmp_path / "one.gpkg", CLASSES, block=4096)
    many = vectorize(mask_path, tmp_path / f"b{block}.gpkg", CLASSES, block=block)
    assert one.counts == many.counts
    with rasterio.open(mask_path) as src:
        transform = src.transform
    a = pixel_outlines(tmp_path / "one.gpkg", transform)
    b = pixel_outlines(tmp_path / f"b{block}.gpkg", transform)
    assert len(a) == len(b)
    for (ca, ga), (cb, gb) in zip(a, b, strict=True):
        assert ca == cb
        assert ga.symmetric_difference(gb).area < 1e-6
    # the long dune is one feature, not one per block row
    frame = gpd.read_file(tmp_path / f"b{block}.gpkg")
    assert (frame.class_name == "dune").sum() == 1
    # background and nodata are never outlined
    assert set(frame.class_name) == {"crater", "dune"}


def test_holes_are_kept_and_pixel_counts_add_up(tmp_path):
    mask = np.zeros((60, 60), np.uint8)
    disc(mask, 30, 30, 20, 1)
    disc(mask, 30, 30, 8, 0)
    path = write_mask(tmp_path / "ring.tif", mask)
    vectorize(path, tmp_path / "ring.gpkg", CLASSES, block=16)
    frame = gpd.read_file(tmp_path / "ring.gpkg")
    assert len(frame) == 1
    ring = frame.geometry.iloc[0]
    assert len(ring.interiors) == 1
    assert ring.area == pytest.approx((mask == 1).sum() * GSD * GSD)  # projected area


def test_attributes_measured_on_mars(tmp_path):
    mask = np.zeros((200, 200), np.uint8)
    disc(mask, 100, 100, 50, 1)
    conf = np.where(mask == 1, 0.8, 0.6).astype(np.float32)
    path = write_mask(tmp_path / "m.tif", mask)
    conf_path = write_mask(tmp_path / "c.tif", conf, dtype="float32", nodata=-1)
    summary = vectorize(path, tmp_path / "f.gpkg", CLASSES, confidence_path=conf_path,
                        circles=True)
    frame = gpd.read_file(tmp_path / "f.gpkg")
    assert list(frame.columns[:-1]) == ["class_id", "class_name", "area_m2", "perimeter_m",
                                        "mean_conf", "diameter_m", "centre_lon", "centre_lat",
                                        "fit_residual"]
    row = frame.iloc[0]
    assert (row.class_id, row.class_name) == (1, "crater")
    # an equirectangular pixel (standard parallel 0) is GSD x GSD·cos(lat) on the ground
    lat = math.radians(row.centre_lat)
    assert 9 < row.centre_lat < 11
    assert row.area_m2 == pytest.approx((mask == 1).sum() * GSD**2 * math.cos(lat), rel=0.002)
    # pixel outlines are staircases: as long as the bounding box's outline
    assert row.perimeter_m == pytest.approx(2 * 100 * GSD * (1 + math.cos(lat)), rel=0.01)
    assert row.mean_conf == pytest.approx(0.8, abs=1e-6)
    assert row.diameter_m == pytest.approx(100 * GSD, rel=0.03)
    assert row.fit_residual < 0.03  # a pixel disc is round to its staircase

    assert summary.counts == {"crater": 1, "dune": 0}
    # centre on Mars: the disc centre's map coordinates, as lon/lat on the Mars sphere
    x, y = 100_000.0 + 100 * GSD, 600_000.0 - 100 * GSD
    radius = 3_396_190.0
    assert row.centre_lon == pytest.approx(math.degrees(x / radius), abs=1e-3)
    assert row.centre_lat == pytest.approx(math.degrees(y / radius), abs=1e-3)
    assert body_of(frame.crs) == "Mars"


def test_fit_residual_tells_a_merged_pair_from_a_crater(tmp_path):
    mask = np.zeros((120, 200), np.uint8)
    disc(mask, 60, 60, 30, 1)
    disc(mask, 60, 115, 30, 1)  # two overlapping craters: one feature, far from round
    path = write_mask(tmp_path / "m.tif", mask)
    vectorize(path, tmp_path / "f.gpkg", CLASSES, circles=True)
    assert gpd.read_file(tmp_path / "f.gpkg").iloc[0].fit_residual > 0.1


def test_area_is_measured_on_the_body_in_polar_stereographic(tmp_path):
    # 49930: Mars north polar stereographic; map units are not ground metres away from the
    # standard parallel, but the geodesic area on the sphere is right.
    mask = np.zeros((50, 50), np.uint8)
    mask[10:40, 10:40] = 1
    transform = from_origin(200_000.0, 300_000.0, GSD, GSD)
    path = write_mask(tmp_path / "polar.tif", mask, crs="IAU_2015:49930", transform=transform)
    vectorize(path, tmp_path / "polar.gpkg", CLASSES)
    frame = gpd.read_file(tmp_path / "polar.gpkg")
    geom = frame.geometry.iloc[0]
    assert body_of(frame.crs) == "Mars"
    assert frame.area_m2.iloc[0] != pytest.approx(geom.area, rel=1e-4)  # not the planar area
    assert frame.area_m2.iloc[0] == pytest.approx(geom.area, rel=0.05)  # but close to it


def test_geographic_mars_crs(tmp_path):
    # IAU_2015:49900: lon/lat degrees on the Mars sphere; 0.01° pixels at the equator
    mask = np.zeros((30, 30), np.uint8)
    mask[10:20, 10:20] = 2
    path = write_mask(tmp_path / "geo.tif", mask, crs="IAU_2015:49900",
                      transform=from_origin(30.0, 0.15, 0.01, 0.01))
    vectorize(path, tmp_path / "geo.gpkg", CLASSES, circles=True)
    frame = gpd.read_file(tmp_path / "geo.gpkg")
    side = math.radians(0.01) * 3_396_190.0
    assert frame.area_m2.iloc[0] == pytest.approx(100 * side**2, rel=1e-3)
    assert frame.class_name.iloc[0] == "dune" and math.isnan(frame.diameter_m.iloc[0])


def test_min_area_and_simplify(tmp_path):
    mask = np.zeros((100, 100), np.uint8)
    disc(mask, 30, 30, 20, 1)   # ~1257 px = ~503,000 m²
    disc(mask, 80, 80, 3, 1)    # ~28 px = ~11,000 m²
    path = write_mask(tmp_path / "m.tif", mask)
    vectorize(path, tmp_path / "all.gpkg", CLASSES)
    vectorize(path, tmp_path / "big.gpkg", CLASSES, min_area=50_000.0, simplify=GSD)
    everything = gpd.read_file(tmp_path / "all.gpkg")
    big = gpd.read_file(tmp_path / "big.gpkg")
    assert len(everything) == 2 and len(big) == 1
    assert big.area_m2.iloc[0] > 50_000.0
    vertices = [len(g.exterior.coords) for g in (everything.geometry.iloc[0],
                                                  big.geometry.iloc[0])]
    assert vertices[1] < vertices[0] / 2  # simplified: far fewer vertices, same feature
    assert big.area_m2.iloc[0] == pytest.approx(everything.area_m2.max(), rel=0.05)


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".geojson"])
def test_formats_read_back_as_mars(tmp_path, suffix):
    mask = busy_mask()
    path = write_mask(tmp_path / "m.tif", mask)
    out = tmp_path / f"features{suffix}"
    summary = vectorize(path, out, CLASSES, block=32)
    frame = gpd.read_file(out)
    assert body_of(frame.crs) == "Mars"
    assert len(frame) == sum(summary.counts.values())
    columns = set(frame.columns)
    # shapefile field names stop at 10 characters: perimeter_m is stored as perimeter_
    assert {"class_id", "class_name", "area_m2", "mean_conf"} <= columns
    assert ("perimeter_" if suffix == ".shp" else "perimeter_m") in columns
    if suffix == ".shp":
        prj = out.with_suffix(".prj").read_text()
        assert prj.startswith("PROJCS[") and "Mars" in prj
    if suffix == ".gpkg":
        # written as plain WKT without an authority code, so QGIS 3.22 can show its name
        import sqlite3

        with sqlite3.connect(out) as db:
            rows = db.execute("SELECT srs_name, organization FROM gpkg_spatial_ref_sys "
                              "WHERE srs_id > 4326 OR srs_id < -1 OR srs_id = 100000").fetchall()
        assert rows and all(org == "NONE" and "Mars" in name for name, org in rows)


def test_geopackage_is_version_1_2_for_qgis_3_22(tmp_path):
    """GDAL >= 3.8 writes GeoPackage 1.4 by default, which QGIS 3.22 warns about; momo-geo writes
    1.2 (application_id 'GPKG', user_version 10200), also when features come in several chunks."""
    import sqlite3

    path = write_mask(tmp_path / "m.tif", busy_mask())
    out = tmp_path / "features.gpkg"
    summary = vectorize(path, out, CLASSES, block=32)
    with sqlite3.connect(out) as db:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        user_version = db.execute("PRAGMA user_version").fetchone()[0]
        (count,) = db.execute("SELECT COUNT(*) FROM features").fetchone()
    assert application_id.to_bytes(4, "big") == b"GPKG"
    assert user_version == 10200
    assert count == sum(summary.counts.values()) > 0


def test_empty_mask_writes_an_empty_layer(tmp_path):
    path = write_mask(tmp_path / "m.tif", np.zeros((20, 20), np.uint8))
    summary = vectorize(path, tmp_path / "none.gpkg", CLASSES)
    assert summary.counts == {"crater": 0, "dune": 0}
    frame = gpd.read_file(tmp_path / "none.gpkg")
    assert len(frame) == 0 and body_of(frame.crs) == "Mars"


def test_bad_vector_requests(tmp_path):
    path = write_mask(tmp_path / "m.tif", busy_mask())
    with pytest.raises(MomoGeoError, match="vector format"):
        vectorize(path, tmp_path / "f.kml", CLASSES)
    (tmp_path / "f.gpkg").write_text("old")
    with pytest.raises(MomoGeoError, match="exists"):
        vectorize(path, tmp_path / "f.gpkg", CLASSES)
    assert (tmp_path / "f.gpkg").read_text() == "old"
    vectorize(path, tmp_path / "f.gpkg", CLASSES, overwrite=True)
    assert len(gpd.read_file(tmp_path / "f.gpkg")) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gpkg", "m.tif"]


def test_fit_circle_recovers_a_circle():
    angles = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    points = np.column_stack([3 + 7 * np.cos(angles), -2 + 7 * np.sin(angles)])
    assert fit_circle(points) == pytest.approx((3, -2, 7), abs=1e-9)


@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_empty_layers_keep_numeric_field_types(tmp_path, suffix):
    """A scene with no feature writes a layer whose fields are numbers, as a full one's are,
    so the layers of many scenes merge (they were text in GeoPackage and shapefile)."""
    from pyogrio import read_info

    empty = write_mask(tmp_path / "empty.tif", np.zeros((20, 20), np.uint8))
    full = write_mask(tmp_path / "full.tif", busy_mask())
    types = []
    for mask in (empty, full):
        out = tmp_path / f"{mask.stem}{suffix}"
        vectorize(mask, out, CLASSES, circles=True)
        info = read_info(out)
        types.append(dict(zip(info["fields"], info["dtypes"], strict=True)))
    assert types[0] == types[1]
    area = "area_m2"
    assert types[0]["class_id"].startswith("int") and types[0][area] == "float64"
    assert types[0]["diameter_m"] == "float64" and types[0]["class_name"] == "object"


def test_geojson_is_written_in_mars_lon_lat_with_its_crs(tmp_path):
    """GeoJSON: longitude/latitude on IAU_2015:49900 (named in the file's crs member), areas as
    measured in the scene's projection; ``geojson_lonlat=False`` keeps the scene's metres."""
    import json

    from pyproj import CRS, Geod

    path = write_mask(tmp_path / "m.tif", busy_mask())
    out = tmp_path / "f.geojson"
    vectorize(path, out, CLASSES, block=32)
    raw = json.loads(out.read_text())
    crs = CRS.from_wkt(raw["crs"]["properties"]["name"])
    assert crs.equals(CRS("IAU_2015:49900"), ignore_axis_order=True)
    frame = gpd.read_file(out)
    lon0, lat0 = 100_000.0 / 3396190 * 180 / math.pi, 600_000.0 / 3396190 * 180 / math.pi
    minx, miny, maxx, maxy = frame.total_bounds
    assert lon0 - 1e-6 <= minx < maxx <= lon0 + 131 * GSD / 3396190 * 180 / math.pi + 1e-6
    assert lat0 - 97 * GSD / 3396190 * 180 / math.pi - 1e-6 <= miny < maxy <= lat0 + 1e-6
    geod = Geod(a=3396190, b=3396190)
    for geom, area in zip(frame.geometry, frame.area_m2, strict=True):
        assert abs(geod.geometry_area_perimeter(geom)[0]) == pytest.approx(area, rel=1e-3)
    projected = tmp_path / "p.geojson"
    vectorize(path, projected, CLASSES, block=32, geojson_lonlat=False)
    assert gpd.read_file(projected).total_bounds[0] >= 100_000.0


def test_geojson_feature_across_the_180_meridian_stays_whole(tmp_path):
    """A crater astride 180°E is written with continuous longitudes (179.9 to 180.1), not
    drawn around the planet from 179.9 to -179.9."""
    half_way = math.pi * 3396190  # x of the 180° meridian in IAU_2015:49910
    mask = np.zeros((40, 40), np.uint8)
    disc(mask, 20, 20, 10, 1)
    path = write_mask(tmp_path / "m.tif", mask,
                      transform=from_origin(half_way - 20 * GSD, 0.0, GSD, GSD))
    vectorize(path, tmp_path / "f.geojson", CLASSES)
    (crater,) = gpd.read_file(tmp_path / "f.geojson").geometry
    west, _, east, _ = crater.bounds
    assert east - west < 1.0 and west < 180.0 < east
