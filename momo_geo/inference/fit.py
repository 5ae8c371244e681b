"""Does a scene suit a model? Warnings (never errors) about body, sensor and GSD.

Shared by the engine (which logs them on every run: CLI stderr, the plugin's log) and the QGIS
dialog (which shows them before a run), so both say the same thing. Torch-free: the plugin's
worker answers a ``describe`` request with these in a fraction of a second.
"""

from __future__ import annotations

from typing import Any

MODEL_BODY = "Mars"
"""The body every momo-geo model is trained on (HiRISE, CTX and THEMIS scenes)."""


def body_warning(scene: Any, card: Any) -> str | None:
    """One line when the scene's CRS is not on Mars (e.g. EPSG:4326 or UTM), else ``None``.

    ``scene`` is a :class:`momo_geo.io.Scene`. A Mars image mislabelled with an Earth CRS is the
    usual cause; the features are mapped all the same, but areas come out on the wrong body.
    """
    body = getattr(scene, "body", MODEL_BODY)
    if body == MODEL_BODY:
        return None
    where = f"an {body} CRS" if body != "unknown" else "a CRS of no known body"
    return (f"{scene.path.name} is in {where} ({scene.crs_description}), but model "
            f"{card.name!r} maps {MODEL_BODY}: areas and lengths will be measured on "
            f"{body if body != 'unknown' else 'that body'}; give the scene its Mars CRS")


def fit_warnings(scene: Any, card: Any) -> list[str]:
    """Why a scene may not suit a model: its body, its sensor or its GSD outside the card's.

    The engine still runs (it resamples to the model's GSD), but a geologist should know the
    model was not trained for it.
    """
    warnings = [w for w in (body_warning(scene, card),) if w]
    if scene.sensor is not None and card.sensors and scene.sensor.name not in card.sensors:
        warnings.append(f"the scene looks like {scene.sensor.title}, but the model was trained "
                        f"on {', '.join(card.sensors)}")
    if scene.sensor is None and card.sensors:
        warnings.append("the scene's sensor is unknown (no HiRISE/CTX/THEMIS product ID or "
                        f"label); the model was trained on {', '.join(card.sensors)}")
    if card.gsd_range:
        lo, hi = card.gsd_range
        if not lo <= scene.gsd <= hi:
            warnings.append(f"the scene's GSD is {scene.gsd:.3g} m/px, outside the model's "
                            f"range {lo:g}–{hi:g} m/px")
    return warnings
