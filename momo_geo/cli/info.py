"""``momo-geo info SCENE``: what momo-geo sees in a raster before mapping it."""

from __future__ import annotations

import json

import click

from momo_geo.cli.inputs import existing_files


@click.command()
@click.argument("scenes", nargs=-1, required=True, type=click.Path(), callback=existing_files)
@click.option("--nodata", type=float, default=None,
              help="Also count pixels of this value as nodata (as `map --nodata` reads them).")
@click.option("--assume-mars", is_flag=True,
              help="Read a scene labelled with an Earth or Moon CRS on the Mars sphere (as "
                   "`map --assume-mars` does) and report it so.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per scene.")
def info(scenes: tuple[str, ...], nodata: float | None, assume_mars: bool,
         as_json: bool) -> None:
    """Sensor, size, GSD, CRS and body, lon/lat bounds, nodata and undeclared frame of SCENES.

    A scene whose CRS is not on Mars is described on its own body, with the line saying that
    `map` refuses it unless --assume-mars.
    """
    from momo_geo import crs as mcrs
    from momo_geo.inference.frame import find_frame
    from momo_geo.inference.options import MapOptions
    from momo_geo.io import (  # GDAL and PROJ: after the path checks
        check_nodata,
        nodata_fraction,
        open_scene,
    )

    MapOptions(nodata=nodata)  # the same checks as map's (a finite number)
    for path in scenes:
        scene = open_scene(path, assume_mars=assume_mars)
        check_nodata(scene, nodata)
        frame = find_frame(str(scene.path), nodata=nodata)
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
            "crs_declared": scene.declared_crs or mcrs.label(scene.crs),
            "mappable": scene.body == "Mars",
            "nodata": scene.nodata,
            "nodata_given": nodata,
            "nodata_fraction": round(nodata_fraction(path, nodata=nodata), 6),
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
        click.echo(f"  CRS             {record['crs']}"
                   + (f", read on Mars from {scene.declared_crs} (--assume-mars)"
                      if scene.declared_crs else ""))
        click.echo(f"  body            {scene.body}"
                   + ("" if record["mappable"] else
                      " (map refuses it: give it its Mars CRS, or --assume-mars)"))
        click.echo(f"  bounds lon/lat  {_lon(west)} to {_lon(east)}, "
                   f"{_lat(south)} to {_lat(north)}")
        values = [f"{v:g}" for v in (scene.nodata,) if v is not None]
        values += [f"{nodata:g} from --nodata"] if nodata is not None else []
        click.echo(f"  nodata          {record['nodata_fraction']:.2%}"
                   + (f" (value {', '.join(values)})" if values else ""))
        if frame is not None:
            click.echo(f"  frame           {frame.fraction:.2%} undeclared collar of value "
                       f"{frame.value:g} (map reads it as nodata)")


def _lon(value: float) -> str:
    return f"{abs(value):.4f}°{'E' if value >= 0 else 'W'}"


def _lat(value: float) -> str:
    return f"{abs(value):.4f}°{'N' if value >= 0 else 'S'}"
