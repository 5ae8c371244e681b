"""``momo-geo models``: the bundled models and what their cards say."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the card(s) as JSON.")
def models(name: str | None, as_json: bool) -> None:
    """List the bundled models, or show the card of NAME (a bundled name or a bundle folder)."""
    from momo_geo.bundle import BUNDLED_MODELS, load_card
    from momo_geo.errors import MomoGeoError

    if name is not None:
        card = load_card(name)
        if as_json:
            click.echo(json.dumps(card.to_dict(), indent=2))
            return
        members = card.architecture.get("members", 1)
        times = f" x {members} (mean probability)" if members > 1 else ""
        click.echo(f"{card.name}: {card.task}, {card.architecture.get('kind')}{times} "
                   f"({card.architecture.get('encoder')}), input {card.input_size} px, "
                   f"tile {card.tile_size}/{card.tile_overlap}")
        click.echo(f"  sensors: {', '.join(card.sensors)}; gsd {card.gsd} m/px, "
                   f"range {card.gsd_range}")
        click.echo("  classes: " + ", ".join(f"{c.id} {c.name} {c.color}" for c in card.classes))
        kept = _kept(card)
        if kept:
            click.echo(f"  kept: {kept}")
        for task, metrics in card.metrics.items():
            if isinstance(metrics, dict):
                shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                                  if isinstance(v, float))
                click.echo(f"  {task}: {shown}")
        if card.description:
            click.echo(f"  {card.description}")
        return
    rows = []
    for bundled in dict.fromkeys(BUNDLED_MODELS):
        try:
            card = load_card(bundled)
        except MomoGeoError as exc:
            rows.append({"name": bundled, "installed": False, "why": str(exc)})
            continue
        rows.append({"name": bundled, "installed": True, "model": card.name, "task": card.task,
                     "classes": card.class_names, "sensors": card.sensors,
                     "metrics": card.metrics})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if not row["installed"]:
            click.echo(f"{row['name']:<10} (not installed)")
            continue
        click.echo(f"{row['name']:<10} {row['model']}: {row['task']}, "
                   f"{len(row['classes'])} classes, sensors {', '.join(row['sensors'])}")


def _kept(card: object) -> str:
    """What the card's floors, smallest sizes, coarse passes and unmapped classes keep, in one
    line."""
    parts = [f"{name} mean confidence >= {floor:g}"
             for name, floor in (getattr(card, "min_confidence", None) or {}).items()]
    parts += [f"{name} >= {size:g} model px across"
              for name, size in (getattr(card, "min_diameter", None) or {}).items()]
    parts += [f"{name} <= {size:g} model px across in the fine pass"
              for name, size in (getattr(card, "max_diameter", None) or {}).items()]
    for spec in getattr(card, "coarse_passes", None) or []:
        parts.append(f"{spec['class']} coarse pass at 1/{round(1 / spec['scale'])}")
    if getattr(card, "tta", "none") == "d4":
        parts.append("mean over the 8 flips and quarter turns of each tile")
    unmapped = getattr(card, "unmapped_classes", None) or []
    if unmapped:
        parts.append(f"never mapped (too few training crops): {', '.join(unmapped)}")
    return "; ".join(parts)
