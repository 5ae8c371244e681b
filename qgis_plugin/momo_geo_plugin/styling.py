"""Layer styles from a model card: the mask paletted, the features categorised, same colours.

The card is the single source of class names and colours, so a crater is the same orange in the
mask, in the vector layer, in the legend and in ``momo-geo map``'s outputs. Background classes
(``momo_geo.inference.options.BACKGROUND_NAMES``, the ones the vectoriser does not outline; the
worker marks them in the card it sends) are drawn transparent so the scene stays visible.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

MASK_OPACITY = 0.6
"""The mask over the scene: translucent, so the terrain under a crater stays readable."""
CLASS_FIELD = "class_name"
"""Attribute of the engine's vector layer that names each feature's class."""


def class_color(class_info: Any) -> QColor:
    color = QColor(class_info.color)
    if class_info.background:
        color.setAlpha(0)
    return color


def style_mask(layer: QgsRasterLayer, card: Any) -> QgsPalettedRasterRenderer:
    """A paletted renderer on band 1: one entry per card class, its colour and its name."""
    classes = [QgsPalettedRasterRenderer.Class(int(c.id), class_color(c), c.name)
               for c in card.classes]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)
    renderer.setOpacity(MASK_OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


def style_features(layer: QgsVectorLayer, card: Any) -> QgsCategorizedSymbolRenderer:
    """A categorised renderer on ``class_name``: translucent fill, outline in the class colour."""
    categories = []
    for class_info in card.classes:
        if class_info.background:
            continue
        color = QColor(class_info.color)
        fill = QColor(color)
        fill.setAlpha(60)
        symbol = QgsFillSymbol.createSimple({
            "color": ",".join(str(v) for v in fill.getRgb()),
            "outline_color": ",".join(str(v) for v in color.getRgb()),
            "outline_width": "0.5",
        })
        categories.append(QgsRendererCategory(class_info.name, symbol, class_info.name))
    renderer = QgsCategorizedSymbolRenderer(CLASS_FIELD, categories)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


def load_styled_layers(mask_path: str, vector_path: str, card: Any,
                       name: str = "") -> tuple[QgsRasterLayer, QgsVectorLayer]:
    """Open both outputs as layers (not yet in a project) and style them from the card."""
    prefix = f"{name} " if name else ""
    mask = QgsRasterLayer(str(mask_path), f"{prefix}{card.name} mask", "gdal")
    features = QgsVectorLayer(str(vector_path), f"{prefix}{card.name} features", "ogr")
    if mask.isValid():
        style_mask(mask, card)
    if features.isValid():
        style_features(features, card)
    return mask, features
