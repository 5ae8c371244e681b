"""``momo-geo info SCENE``: what momo-geo sees in a raster before mapping it."""

from __future__ import annotations

import json

import click

from momo_geo.cli.inputs import existing_files


@click.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path(), callback=existing_files)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per scene.")
def info(scenes: tuple[str, ...], as_json: bool) -> None:
    """Sensor, size, GSD, CRS and body, lon/lat bounds, nodata and undeclared frame of SCENES."""
    from momo_geo.inference.frame import find_frame
    from momo_geo.io import nodata_fraction, open_scene  # GDAL and PROJ: after the path checks

    for path in scenes:
        scene = open_scene(path)
        frame = find_frame(str(scene.path))
        west, south, east, north = scene.bounds_lonlat()
        record = {
            "path": str(scene.path),
            "sensor": scene.sensor.title if scene.sensor else None,
            "width": scene.width,
            "height": scene.height,
            "bands": scene.count,
            "dtype": scene.dtype,
            "gsd_m": round(scene.gsd, 4),
            "crs": scene.crs_description,
            "body": scene.body,
            "bounds_lonlat": [round(v, 6) for v in (west, south, east, north)],
            "nodata": scene.nodata,
            "nodata_fraction": round(nodata_fraction(path), 6),
            "frame_value": frame.value if frame else None,
            "frame_fraction": round(frame.fraction, 6) if frame else 0.0,
        }
        if as_json:
            click.echo(json.dumps(record))
            continue
        sensor = record["sensor"] or "unknown (no product ID in the name or metadata)"
        click.echo(f"{scene.path}")
        click.echo(f"  sensor          {sensor}")
        click.echo(f"  size            {scene.width} x {scene.height} px, {scene.count} band(s), "
                   f"{scene.dtype}")
        click.echo(f"  GSD             {scene.gsd:.3f} m/px")
        click.echo(f"  CRS             {record['crs']}")
        click.echo(f"  body            {scene.body}")
        click.echo(f"  bounds lon/lat  {_lon(west)} to {_lon(east)}, "
                   f"{_lat(south)} to {_lat(north)}")
        click.echo(f"  nodata          {record['nodata_fraction']:.2%}"
                   + (f" (value {scene.nodata:g})" if scene.nodata is not None else ""))
        if frame is not None:
            click.echo(f"  frame           {frame.fraction:.2%} undeclared collar of value "
                       f"{frame.value:g} (map reads it as nodata)")


def _lon(value: float) -> str:
    return f"{abs(value):.4f}°{'E' if value >= 0 else 'W'}"


def _lat(value: float) -> str:
    return f"{abs(value):.4f}°{'N' if value >= 0 else 'S'}"
