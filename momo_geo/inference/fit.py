"""Does a scene suit a model? One refusal (the wrong body) and warnings about sensor and GSD.

Shared by the engine (which refuses or logs them on every run: CLI stderr, the plugin's log) and
the QGIS dialog (which shows them before a run), so both say the same thing. Torch-free: the
plugin's worker answers a ``describe`` request with these in a fraction of a second.

A scene in an Earth or Moon CRS is refused, not warned about: mapped anyway, its areas came out
on the wrong body with exit 0. A Mars product mislabelled EPSG:4326 is the commonest CRS error in
planetary GIS, so the refusal names the CRS and the way out (``--assume-mars``, which
:func:`momo_geo.io.open_scene` applies by reading the coordinates on the Mars sphere).
"""

from __future__ import annotations

from typing import Any

from momo_geo.errors import MomoGeoError

MODEL_BODY = "Mars"
"""The body every momo-geo model is trained on (HiRISE, CTX and THEMIS scenes)."""


def _where(scene: Any) -> str:
    from momo_geo.crs import label

    body = scene.body
    article = "an" if body[:1] in "AEIOU" else "a"
    where = f"{article} {body} CRS" if body != "unknown" else "a CRS of no known body"
    return f"{scene.path.name} is in {where} ({label(scene.crs)})"


def body_warning(scene: Any, card: Any) -> str | None:
    """One line when the scene's CRS is not on Mars (e.g. EPSG:4326 or UTM), else ``None``.

    ``scene`` is a :class:`momo_geo.io.Scene`. What the dialog shows before a run; the run
    itself is refused by :func:`check_body` unless the user assumes Mars.
    """
    if getattr(scene, "body", MODEL_BODY) == MODEL_BODY:
        return None
    return (f"{_where(scene)}, but model {card.name!r} maps {MODEL_BODY}: mapping is refused "
            "unless you assume Mars (--assume-mars), which reads its coordinates on the Mars "
            "sphere")


def check_body(scene: Any) -> None:
    """Refuse, in one line naming the CRS and the override, a scene whose CRS is not on Mars."""
    if getattr(scene, "body", MODEL_BODY) == MODEL_BODY:
        return
    raise MomoGeoError(f"{_where(scene)}, but momo-geo's models map {MODEL_BODY}: give the "
                       "scene its Mars CRS, or pass --assume-mars to read its coordinates on "
                       "the Mars sphere")


def open_mappable(scene: Any, options: Any) -> Any:
    """The scene opened as ``map_scene`` reads it (``options.assume_mars``), refused in one line
    unless it can be mapped: readable, georeferenced, on Mars, ``options.nodata`` a value it can
    hold. The CLI calls it for every scene before a model loads (a bad scene costs no model),
    the engine again when it maps."""
    from momo_geo.io import check_nodata, open_scene

    info = open_scene(scene, assume_mars=options.assume_mars)
    check_body(info)
    check_nodata(info, options.nodata)
    return info


def assumed_mars_notice(scene: Any) -> str | None:
    """One line when ``--assume-mars`` read the scene's coordinates on Mars, else ``None``."""
    if getattr(scene, "declared_crs", None) is None:
        return None
    from momo_geo.crs import label

    return (f"{scene.path.name}: its {scene.declared_crs} coordinates are read on the Mars "
            f"sphere as {label(scene.crs)} (--assume-mars); areas are measured on Mars")


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
