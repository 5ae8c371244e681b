"""momo-geo: map Martian surface features with MOMO, a merged multi-sensor ViT foundation model.

The package is QGIS-free; the command line (:mod:`momo_geo.cli`) and the QGIS plugin
(``qgis_plugin/``) are thin shells over the same functions.
"""

__version__ = "0.1.0"

from momo_geo.errors import MomoGeoError

__all__ = ["MomoGeoError", "__version__"]
