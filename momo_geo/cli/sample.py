"""``momo-geo sample-scene OUT.tif``: render a synthetic, georeferenced crater field with truth."""

from __future__ import annotations

import click

from momo_geo.cli.inputs import output_folder


@click.command("sample-scene")
@click.argument("output", type=click.Path(dir_okay=False), callback=output_folder)
@click.option("--size", type=int, default=1024, show_default=True,
              help="Scene width and height in pixels (square).")
@click.option("--height", type=int, default=None, help="Scene height in pixels, if not square.")
@click.option("--gsd", type=float, default=6.0, show_default=True,
              help="Ground sampling distance, metres per pixel on the ground at the centre.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--sun-azimuth", type=float, default=315.0, show_default=True,
              help="Sun azimuth, degrees clockwise from grid north (image up).")
@click.option("--sun-elevation", type=float, default=30.0, show_default=True,
              help="Sun elevation above the horizon, degrees.")
@click.option("--min-diameter", type=float, default=None,
              help="Smallest crater diameter in metres [default: 8 px].")
@click.option("--max-diameter", type=float, default=None,
              help="Largest crater diameter in metres [default: 60 px].")
@click.option("--crater-cover", type=float, default=0.08, show_default=True,
              help="Expected fraction of the surface inside crater rims (before overlaps).")
@click.option("--sfd-slope", type=float, default=2.0, show_default=True,
              help="Cumulative size-frequency slope: N(>D) ~ D^-slope.")
@click.option("--crs", default="IAU_2015:49910", show_default=True,
              help="Mars CRS of the scene (IAU_2015 / ESRI code or WKT).")
@click.option("--lon", type=float, default=77.0, show_default=True,
              help="Longitude of the scene centre, degrees east.")
@click.option("--lat", type=float, default=18.0, show_default=True,
              help="Latitude of the scene centre, degrees north.")
@click.option("--nodata-frame", type=int, default=0, show_default=True,
              help="Width in pixels of a nodata border (value 0); 0 for none.")
@click.option("--block", type=int, default=2048, show_default=True,
              help="Render and write in blocks of this many pixels (bounds memory).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def sample_scene(output: str, size: int, height: int | None, gsd: float, seed: int,
                 sun_azimuth: float, sun_elevation: float, min_diameter: float | None,
                 max_diameter: float | None, crater_cover: float, sfd_slope: float, crs: str,
                 lon: float, lat: float, nodata_frame: int, block: int, overwrite: bool) -> None:
    """Write OUTPUT (GeoTIFF), OUTPUT_truth.tif (crater mask) and OUTPUT_craters.csv.

    The scene is synthetic: bowl-shaped craters with raised rims and ejecta, a power-law
    size-frequency distribution, Lambertian shading under the given sun, regolith texture and
    sensor noise, in a real Mars CRS. Its metadata says it is synthetic.
    """
    from momo_geo.synthetic import write_crater_field_streaming

    paths = write_crater_field_streaming(
        output, size=(height or size, size), gsd=gsd, seed=seed, block=block,
        overwrite=overwrite, sun_azimuth=sun_azimuth, sun_elevation=sun_elevation,
        min_diameter_m=min_diameter, max_diameter_m=max_diameter, crater_cover=crater_cover,
        sfd_slope=sfd_slope, crs=crs, center_lonlat=(lon, lat), nodata_frame=nodata_frame,
    )
    import pandas as pd

    craters = pd.read_csv(paths["craters"])
    click.echo(f"wrote {paths['image']} ({height or size} x {size} px at {gsd:g} m/px), "
               f"{paths['truth']}, {paths['craters']} ({len(craters)} craters)")
