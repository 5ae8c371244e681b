"""Mars-correct CRS handling: bodies, same-body checks, areas and lengths on the CRS's own body."""

from __future__ import annotations

import math

import pytest
import rasterio
from affine import Affine
from pyproj import CRS, Proj, Transformer
from shapely.geometry import LineString, Polygon, box

from momo_geo import crs as mcrs
from momo_geo.errors import MomoGeoError

MARS_R = 3_396_190.0  # IAU 2015 Mars sphere radius, the one the IAU_2015:499xx CRSs use

HIRISE_LOCAL_RADIUS_WKT = (
    'PROJCS["EQUIRECTANGULAR MARS",GEOGCS["GCS_MARS",DATUM["D_MARS",'
    'SPHEROID["MARS_localRadius",3396190,0]],PRIMEM["Reference_Meridian",0],'
    'UNIT["degree",0.0174532925199433]],PROJECTION["Equirectangular"],'
    'PARAMETER["standard_parallel_1",0],PARAMETER["central_meridian",149.9],'
    'PARAMETER["false_easting",0],PARAMETER["false_northing",0],UNIT["metre",1]]'
)
# Same, but nothing in the names says Mars: only the radius (a local radius a few km off) can.
UNNAMED_LOCAL_RADIUS_WKT = HIRISE_LOCAL_RADIUS_WKT.replace('"MARS_localRadius",3396190',
                                                           '"unnamed",3393514').replace(
    "GCS_MARS", "unnamed").replace("D_MARS", "unnamed").replace("EQUIRECTANGULAR MARS", "eqc")


@pytest.mark.parametrize("crs", [
    "IAU_2015:49900", "IAU_2015:49910", "IAU_2015:49930", "IAU_2015:49935",
    "ESRI:104905",   # GCS_Mars_2000 (ellipsoid)
    "ESRI:104971",   # Mars 2000 sphere
    "ESRI:103885",   # Mars_2000_Equidistant_Cylindrical_sphere
    HIRISE_LOCAL_RADIUS_WKT, UNNAMED_LOCAL_RADIUS_WKT,
])
def test_mars_crs_are_mars(crs):
    assert mcrs.body_of(crs) == "Mars"
    assert mcrs.is_mars(crs)
    assert mcrs.describe(crs).endswith("(Mars)")


@pytest.mark.parametrize(("crs", "body"), [
    ("EPSG:4326", "Earth"), ("EPSG:32633", "Earth"), ("EPSG:3857", "Earth"),
    ("EPSG:4732", "Earth"),   # "Marshall Islands 1960": an Earth CRS whose name starts "Mars"
    ("EPSG:7299", "Earth"),   # "... Fulton-Marshall-St. Joseph"
    ("ESRI:104903", "Moon"),
])
def test_other_bodies(crs, body):
    assert mcrs.body_of(crs) == body
    assert not mcrs.is_mars(crs)


def test_unknown_codes_are_refused():
    with pytest.raises(MomoGeoError, match="not a valid coordinate reference system"):
        mcrs.as_crs("IAU_2015:49918")  # no such IAU code
    with pytest.raises(MomoGeoError, match="not georeferenced"):
        mcrs.as_crs(None)


def test_rasterio_crs_is_accepted_unchanged():
    rio = rasterio.crs.CRS.from_wkt(HIRISE_LOCAL_RADIUS_WKT)
    crs = mcrs.as_crs(rio)
    assert crs.ellipsoid.name == "MARS_localRadius"
    assert crs.ellipsoid.semi_major_metre == 3396190.0


def test_hirise_dtms_local_radius_is_mars(shared_data):
    for name in ("DTEEC_017825_1760_018458_1760_A01.tif", "DTEED_002424_1765_019803_1765_A01.tif"):
        with rasterio.open(shared_data / "hirise_scene" / name) as src:
            assert "MARS_localRadius" in src.crs.to_wkt()
            assert mcrs.body_of(src.crs) == "Mars"
            # Measurements use that sphere, not a named Mars or Earth ellipsoid.
            geod = mcrs.geod_of(src.crs)
            assert geod.a == mcrs.as_crs(src.crs).ellipsoid.semi_major_metre == 3396190.0


def test_same_body_check():
    assert mcrs.check_same_body("IAU_2015:49910", "IAU_2015:49930", HIRISE_LOCAL_RADIUS_WKT,
                                None) == "Mars"
    with pytest.raises(MomoGeoError) as info:
        mcrs.check_same_body("IAU_2015:49910", "EPSG:4326")
    message = str(info.value)
    assert "Earth" in message and "Mars" in message and "\n" not in message
    with pytest.raises(MomoGeoError, match="Mars and Moon"):
        mcrs.check_same_body("ESRI:104903", "IAU_2015:49900")


def _ground_square(crs: CRS, x0: float, y0: float, side_m: float = 1000.0) -> Polygon:
    """A square of ``side_m`` ground metres at (x0, y0), sized with the CRS's local scale."""
    to_lonlat = mcrs.lonlat_transformer(crs)
    lon, lat = to_lonlat.transform(x0, y0)
    factors = Proj(crs).get_factors(lon, lat)
    # Conformal or not: along x the scale is the parallel scale for the cylindrical projection,
    # and the (isotropic) areal scale root for the conformal polar one.
    kx = factors.parallel_scale if "Equirectangular" in crs.name else math.sqrt(
        factors.areal_scale)
    ky = factors.meridional_scale if "Equirectangular" in crs.name else kx
    return box(x0, y0, x0 + side_m * kx, y0 + side_m * ky)


@pytest.mark.parametrize(("code", "lonlat"), [
    ("IAU_2015:49910", (0.0, 0.0)),     # natural origin: scale 1
    ("IAU_2015:49910", (77.0, 60.0)),   # 2x stretched along x at 60°N
    ("IAU_2015:49930", (0.0, 90.0)),    # north pole
    ("IAU_2015:49930", (45.0, 80.0)),   # off the pole: scale 2 / (1 + sin 80°)
    ("IAU_2015:49935", (-120.0, -85.0)),
])
def test_one_square_km_is_one_square_km(code, lonlat):
    crs = CRS(code)
    to_crs = Transformer.from_crs(mcrs.geographic_of(crs), crs, always_xy=True)
    x0, y0 = to_crs.transform(*lonlat)
    square = _ground_square(crs, x0, y0)
    assert mcrs.area_m2(square, crs) == pytest.approx(1e6, rel=0.005)
    assert mcrs.length_m(square, crs) == pytest.approx(4000.0, rel=0.005)


def test_area_matches_the_sphere_formula_and_is_not_earths():
    # A 1° x 1° cell at 40-41°N: R² Δλ (sin φ2 - sin φ1) on the Mars sphere.
    cell = box(10.0, 40.0, 11.0, 41.0)
    expected = MARS_R**2 * math.radians(1.0) * (math.sin(math.radians(41)) -
                                                math.sin(math.radians(40)))
    mars = mcrs.area_m2(cell, "IAU_2015:49900")
    earth = mcrs.area_m2(cell, "EPSG:4326")
    assert mars == pytest.approx(expected, rel=1e-3)
    assert earth / mars == pytest.approx((6_371_000 / MARS_R) ** 2, rel=0.01)


def test_lengths_and_batch_measurements_agree():
    crs = CRS("IAU_2015:49910")
    line = LineString([(0, 0), (3000, 4000)])
    assert mcrs.length_m(line, crs) == pytest.approx(5000.0, rel=0.005)
    polygons = [box(0, 0, 1000, 1000), box(0, 0, 2000, 500).buffer(0),
                Polygon([(0, 0), (1000, 0), (0, 1000)])]
    areas, perimeters = mcrs.areas_lengths(polygons, crs)
    for polygon, area, perimeter in zip(polygons, areas, perimeters, strict=True):
        assert area == pytest.approx(mcrs.area_m2(polygon, crs), rel=1e-9)
        assert perimeter == pytest.approx(mcrs.length_m(polygon, crs), rel=1e-9)
    assert areas[2] == pytest.approx(5e5, rel=0.005)


def test_pixel_size_on_the_body():
    crs = CRS("IAU_2015:49910")
    lat = 60.0
    y = math.radians(lat) * MARS_R
    # Equirectangular with true scale at the equator: 12 CRS metres are 6 ground metres at 60°.
    dx, dy = mcrs.pixel_size_m(crs, Affine(12.0, 0, 0, 0, -6.0, y), 0, 0)
    assert dx == pytest.approx(12.0 * math.cos(math.radians(lat)), rel=0.01)
    assert dy == pytest.approx(6.0, rel=0.01)


def test_wkt_forms_keep_the_body():
    for code in ("IAU_2015:49910", "IAU_2015:49930"):
        plain = mcrs.wkt_without_id(code)
        assert "IAU_2015" not in plain.splitlines()[-1]
        assert CRS(plain).equals(CRS(code), ignore_axis_order=True)
        assert mcrs.body_of(plain) == "Mars"
        esri = mcrs.esri_wkt(code)
        assert esri.startswith("PROJCS[") and "3396190" in esri
        assert mcrs.body_of(esri) == "Mars"
