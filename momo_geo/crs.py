"""Mars-correct coordinate reference systems.

Planetary rasters come in IAU_2015 codes (49900 geographic, 49910 equirectangular, 49930/49935
polar stereographic), ESRI Mars codes, or custom WKT such as HiRISE's local-radius spheres.
momo-geo keeps the source CRS unchanged and does every measurement on the CRS's own body:
areas and lengths are geodesic on the CRS's ellipsoid (``pyproj.Geod``), so they are right in any
projection, and no Earth constant or EPSG:4326 shortcut is ever involved.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

from momo_geo.errors import MomoGeoError

# Mean radii (m) of the bodies a planetary CRS is likely to name; a CRS whose semi-major axis
# lies within the tolerance of one of them belongs to that body even if its name does not say so
# (HiRISE DTMs use "MARS_localRadius" spheres a few km off the IAU radius).
_BODIES: dict[str, tuple[float, float]] = {
    "Earth": (6_371_000.0, 30_000.0),
    "Mars": (3_389_500.0, 40_000.0),
    "Moon": (1_737_400.0, 15_000.0),
    "Mercury": (2_439_400.0, 10_000.0),
    "Venus": (6_051_800.0, 10_000.0),
}


def as_crs(crs: Any) -> CRS:
    """Accept a pyproj CRS, a rasterio CRS, WKT, ``"IAU_2015:49910"`` or an EPSG int."""
    if isinstance(crs, CRS):
        return crs
    if crs is None:
        raise MomoGeoError("no coordinate reference system: the raster is not georeferenced")
    try:
        if hasattr(crs, "to_wkt"):
            return CRS.from_wkt(crs.to_wkt())
        return CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises several types; all mean "not a CRS"
        raise MomoGeoError(f"not a valid coordinate reference system: {crs!r} ({exc})") from None


def body_of(crs: Any) -> str:
    """The celestial body a CRS is defined on: ``"Mars"``, ``"Earth"``, ... or ``"unknown"``."""
    crs = as_crs(crs)
    names = " ".join(
        str(x) for x in (crs.name, getattr(crs.datum, "name", ""),
                         getattr(crs.ellipsoid, "name", ""))
    ).lower()
    celestial = getattr(crs, "celestial_body_name", None)
    if celestial:
        names += " " + celestial.lower()
    for body in _BODIES:
        # A name that mentions the body decides; "Earth" only when nothing says otherwise. The
        # body must stand as a word of its own ("GCS_MARS", "Mars_2000"), so an Earth CRS such as
        # "Marshall Islands 1960" (EPSG:4732) is not taken for Mars.
        mentioned = re.search(rf"(?<![a-z]){body.lower()}(?![a-z])", names) is not None
        if mentioned and (body != "Earth" or celestial in (None, "Earth")):
            return body
    if crs.ellipsoid is not None:
        a = crs.ellipsoid.semi_major_metre
        for body, (radius, tolerance) in _BODIES.items():
            if abs(a - radius) <= tolerance:
                return body
    return "unknown"


def is_mars(crs: Any) -> bool:
    return body_of(crs) == "Mars"


def check_same_body(*crss: Any) -> str:
    """Refuse to mix bodies: all CRSs must be on one body, which is returned."""
    bodies = {body_of(c) for c in crss if c is not None}
    if len(bodies) > 1:
        raise MomoGeoError(
            "cannot mix coordinate systems of different bodies "
            f"({' and '.join(sorted(bodies))}); momo-geo never reprojects between planets"
        )
    return bodies.pop() if bodies else "unknown"


def geod_of(crs: Any) -> Geod:
    """A ``pyproj.Geod`` on the CRS's own ellipsoid (Mars sphere, Mars ellipsoid, local radius)."""
    crs = as_crs(crs)
    ellipsoid = crs.ellipsoid
    if ellipsoid is None:
        raise MomoGeoError(f"CRS {crs.name!r} has no ellipsoid; cannot measure on its body")
    return Geod(a=ellipsoid.semi_major_metre, b=ellipsoid.semi_minor_metre)


def geographic_of(crs: Any) -> CRS:
    """The geographic (lon/lat) CRS on the same body and datum."""
    crs = as_crs(crs)
    geodetic = crs.geodetic_crs
    if geodetic is None:
        raise MomoGeoError(f"CRS {crs.name!r} has no geodetic datum")
    return geodetic


def lonlat_transformer(crs: Any) -> Transformer:
    """Transformer from ``crs`` to longitude/latitude on its own body (always x=lon, y=lat)."""
    crs = as_crs(crs)
    return Transformer.from_crs(crs, geographic_of(crs), always_xy=True)


def _segment_length(crs: CRS) -> float:
    """Densification step in CRS units: ~1 km on the ground, so edges follow the projection."""
    if crs.is_geographic:
        return 0.02  # degrees, ~1.2 km on Mars
    return 1000.0 / (crs.axis_info[0].unit_conversion_factor or 1.0)


def _to_lonlat(geometry: BaseGeometry, crs: CRS) -> BaseGeometry:
    dense = shapely.segmentize(geometry, _segment_length(crs))
    if crs.is_geographic and _axis_order_is_lonlat(crs):
        return dense
    transformer = lonlat_transformer(crs)

    def project(coords: np.ndarray) -> np.ndarray:
        lon, lat = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(dense, project)


def _axis_order_is_lonlat(crs: CRS) -> bool:
    # Geometries from rasters always hold (x, y) = (column direction, row direction) = (lon, lat)
    # for geographic rasters, whatever the CRS's formal axis order.
    return True


def area_m2(geometry: BaseGeometry, crs: Any) -> float:
    """Area in square metres on the CRS's body (geodesic, any projection)."""
    crs = as_crs(crs)
    lonlat = _to_lonlat(geometry, crs)
    area, _ = geod_of(crs).geometry_area_perimeter(lonlat)
    return abs(float(area))


def length_m(geometry: BaseGeometry, crs: Any) -> float:
    """Length (lines) or perimeter (polygons, holes included) in metres on the CRS's body."""
    crs = as_crs(crs)
    lonlat = _to_lonlat(geometry, crs)
    if lonlat.geom_type in ("Polygon", "MultiPolygon"):
        _, perimeter = geod_of(crs).geometry_area_perimeter(lonlat)
        return float(perimeter)
    return float(geod_of(crs).geometry_length(lonlat))


def areas_lengths(geometries: list[BaseGeometry], crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised-enough :func:`area_m2` / :func:`length_m` for many polygons."""
    crs = as_crs(crs)
    geod = geod_of(crs)
    areas = np.empty(len(geometries))
    perimeters = np.empty(len(geometries))
    for i, geometry in enumerate(geometries):
        area, perimeter = geod.geometry_area_perimeter(_to_lonlat(geometry, crs))
        areas[i], perimeters[i] = abs(area), perimeter
    return areas, perimeters


def pixel_size_m(crs: Any, transform: Any, col: float, row: float) -> tuple[float, float]:
    """Ground size (m) of one pixel at (col, row): geodesic distance to the next column / row."""
    crs = as_crs(crs)
    to_lonlat = lonlat_transformer(crs)
    geod = geod_of(crs)
    pts = [transform @ (col, row), transform @ (col + 1, row), transform @ (col, row + 1)]
    lon, lat = to_lonlat.transform([p[0] for p in pts], [p[1] for p in pts])
    _, _, dx = geod.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, dy = geod.inv(lon[0], lat[0], lon[2], lat[2])
    return float(dx), float(dy)


def describe(crs: Any) -> str:
    """Human-readable name of a CRS, with its body: ``"Mars 2000 Equirectangular (Mars)"``."""
    crs = as_crs(crs)
    name = crs.name if crs.name and crs.name != "unknown" else "custom CRS"
    return f"{name} ({body_of(crs)})"


def wkt_without_id(crs: Any) -> str:
    """The CRS's WKT2 with its top-level authority ID removed.

    QGIS 3.22 cannot resolve IAU_2015 authority codes and shows an empty CRS for a GeoPackage
    written with one; the same CRS written as plain WKT is shown with its name.
    """
    crs = as_crs(crs)
    as_json = crs.to_json_dict()
    as_json.pop("id", None)
    as_json.pop("ids", None)
    return CRS.from_json_dict(as_json).to_wkt()


def esri_wkt(crs: Any) -> str:
    """WKT1 in ESRI's dialect, the one a shapefile's ``.prj`` should hold for ArcGIS and QGIS."""
    crs = as_crs(crs)
    from pyproj.enums import WktVersion

    wkt = crs.to_wkt(WktVersion.WKT1_ESRI)
    if not wkt:
        raise MomoGeoError(f"CRS {crs.name!r} cannot be written as ESRI WKT")
    return wkt


def degrees_per_metre(crs: Any) -> float:
    """For a geographic CRS: degrees of latitude per metre on its body (for simplification)."""
    crs = as_crs(crs)
    return 180.0 / (math.pi * crs.ellipsoid.semi_major_metre)


# --------------------------------------------------------------------------------------------
# Mars products mislabelled with another body's CRS (``--assume-mars``)

MARS_GEOGRAPHIC = "IAU_2015:49900"
"""Mars (2015) sphere, planetocentric lon/lat: the planetary web-map and GeoJSON convention."""

# Projection methods defined by a formula on a sphere and a few body-free parameters (centre,
# standard parallels, false easting/northing, scale): the same numbers mean the same thing on
# the Mars sphere. Methods fitted to one Earth datum (Krovak, New Zealand Map Grid, ...) and
# UTM, whose zones exist only on Earth, are not carried to Mars.
_PORTABLE_METHODS = frozenset(m.lower() for m in (
    "Equidistant Cylindrical", "Equidistant Cylindrical (Spherical)",
    "Popular Visualisation Pseudo Mercator", "Mercator (variant A)", "Mercator (variant B)",
    "Mercator (variant C)", "Mercator (Spherical)",
    "Polar Stereographic (variant A)", "Polar Stereographic (variant B)",
    "Polar Stereographic (variant C)", "Oblique Stereographic", "Stereographic",
    "Lambert Azimuthal Equal Area", "Lambert Azimuthal Equal Area (Spherical)",
    "Lambert Conic Conformal (1SP)", "Lambert Conic Conformal (2SP)", "Albers Equal Area",
    "Sinusoidal", "Orthographic", "Azimuthal Equidistant", "Mollweide", "Robinson",
    "Equal Earth", "Lambert Cylindrical Equal Area", "Lambert Cylindrical Equal Area (Spherical)",
    "Transverse Mercator",
))


def label(crs: Any) -> str:
    """A CRS as a geologist would name it in one line: ``EPSG:32633 (WGS 84 / UTM zone 33N)``."""
    crs = as_crs(crs)
    name = crs.name if crs.name and crs.name != "unknown" else "custom CRS"
    # rasterio hands over WKT without IDs; PROJ finds IAU codes only when asked for that authority
    authority = crs.to_authority(min_confidence=90) or crs.to_authority("IAU_2015", 90)
    return f"{':'.join(authority)} ({name})" if authority else name


def on_mars(crs: Any) -> CRS:
    """The same coordinates read on the Mars sphere (``--assume-mars``), or a one-line error.

    Why: a Mars image labelled EPSG:4326 (the commonest CRS error in planetary GIS) holds Mars
    degrees; one labelled World Equidistant Cylindrical, Web Mercator or a polar stereographic
    projection holds Mars metres. A geographic CRS of any body becomes :data:`MARS_GEOGRAPHIC`; a
    projection whose formula does not depend on its body gets the Mars sphere as its base, so its
    metres stay metres and areas are measured on Mars. Anything else is refused.
    """
    crs = as_crs(crs)
    if crs.is_compound:
        crs = crs.sub_crs_list[0]
    if body_of(crs) == "Mars":
        return crs
    mars = CRS.from_user_input(MARS_GEOGRAPHIC)
    if crs.is_geographic and not crs.is_projected:
        return mars
    method = crs.coordinate_operation.method_name if crs.coordinate_operation else ""
    if not crs.is_projected or method.lower() not in _PORTABLE_METHODS:
        kind = f"uses the {method} projection" if method else "is not a map projection"
        raise MomoGeoError(f"{label(crs)} {kind}, which --assume-mars cannot carry to Mars; "
                           "give the scene its Mars CRS (e.g. gdal_edit.py -a_srs "
                           "IAU_2015:49910 for equirectangular metres)")
    spec = crs.to_json_dict()
    for key in ("id", "ids"):
        spec.pop(key, None)
    spec["base_crs"] = mars.to_json_dict()
    spec["name"] = f"Mars (2015) - Sphere / {crs.name.split(' / ')[-1]}"
    try:
        result = CRS.from_json_dict(spec)
        lonlat_transformer(result).transform(0.0, 0.0, errcheck=True)
    except Exception:  # PROJ turns Transverse Mercator with UTM values into UTM: Earth only
        raise MomoGeoError(f"{label(crs)} is a UTM zone, which exists only on Earth; "
                           "--assume-mars cannot place it on Mars: give the scene its Mars CRS "
                           "(e.g. gdal_edit.py -a_srs IAU_2015:49910)") from None
    return result
