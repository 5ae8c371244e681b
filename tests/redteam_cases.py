"""The red-team matrix: bad inputs, bad outputs, interrupts and concurrent runs, as one table.

``tests/test_redteam.py`` runs every case as a real ``momo-geo`` process and checks what the
user gets: the exit status, exactly one line on stderr (none for a success) containing
:attr:`Case.says`, and the exact set of files before and after (every file not named in
``created``, ``changed`` or ``removed`` byte-identical). ``docs/reliability.md`` is generated
from this table (``python tests/redteam_cases.py``), and a test checks that it is current, so
the documented behaviour is the tested behaviour.

Adding a case: append a :class:`Case` to :data:`CASES`. ``argv`` follows ``momo-geo``;
``{tmp}`` is the case's own folder (the working folder unless ``cwd`` names a sub-folder),
``{model}`` the tiny test model bundle. ``files`` are made in ``{tmp}`` before the run,
``name -> kind``; the kinds are :data:`FILE_KINDS` (made in ``tests/test_redteam.py``:
``MAKERS``, where a new kind is one function).

Imports nothing but the standard library, so the doc can be written without torch.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"

FILE_KINDS = {
    "scene": "a small Mars scene (96 x 96 px, IAU_2015:49910, bright and dark squares)",
    "big": "a 1500 x 1500 px Mars scene (minutes with --tile 16: a run to interrupt)",
    "noise": "a 1200 x 1200 px Mars scene of random pixels (a mask that does not compress)",
    "bundle": "a copy of the tiny test model bundle (card.json + weights.safetensors)",
    "folder": "an empty folder",
    "text:…": "a text file with that content",
}
ACTIONS = {
    "run": "run once and wait",
    "signal:TERM": "start, wait until mapping is under way, send SIGTERM (also INT, HUP)",
    "concurrent": "start a first run, wait until it is under way, start the same command again "
                  "(checked), then stop the first with SIGTERM",
}
SLOW = ("--tile", "16", "--overlap", "4", "--batch-size", "1")
"""Flags that make a big scene take minutes: a run still under way when signalled."""


@dataclass(frozen=True)
class Case:
    """One thing a user (or a hostile user) does, and exactly what must come of it."""

    name: str
    """Short id (pytest shows it): lower case with hyphens."""
    item: str
    """The item of issue 11 it checks (``"1"`` … ``"15"``)."""
    does: str
    """What the user does, in words, for the doc."""
    argv: tuple[str, ...]
    """Arguments after ``momo-geo``, with ``{tmp}`` and ``{model}``."""
    files: dict[str, str] = field(default_factory=dict)
    """Files made in the case folder before the run: relative name -> kind."""
    exit: int = 1
    """Expected exit status."""
    says: str = ""
    """Text the one stderr line must contain (``{tmp}`` allowed); empty: stderr is empty."""
    created: tuple[str, ...] = ()
    """Files (relative names) that must appear; nothing else may."""
    changed: tuple[str, ...] = ()
    """Existing files that must be replaced (their bytes differ afterwards)."""
    removed: tuple[str, ...] = ()
    """Existing files that must be gone afterwards."""
    action: str = "run"
    """One of :data:`ACTIONS` (``signal:INT``, ``signal:TERM``, ``signal:HUP``)."""
    cwd: str = ""
    """Working folder, relative to the case folder."""
    file_size_limit: int | None = None
    """``ulimit -f`` in bytes for the run (a disk that fills up)."""

    def gets(self) -> str:
        """What the user gets, in words, for the doc."""
        parts = [f"exit {self.exit}"]
        parts.append(f"one line: `{self.says}`" if self.says else "no message")
        if self.created:
            parts.append("writes " + ", ".join(f"`{n}`" for n in self.created))
        if self.changed:
            parts.append("replaces " + ", ".join(f"`{n}`" for n in self.changed))
        if self.removed:
            parts.append("removes " + ", ".join(f"`{n}`" for n in self.removed))
        if not (self.created or self.changed or self.removed):
            parts.append("no file written, changed or removed")
        return "; ".join(parts)


MAP = ("map", "{tmp}/scene.tif", "--model", "{model}", "-q")
"""``momo-geo map`` on the small scene with the tiny model, no progress bar."""

CASES: list[Case] = [
    # ---- item 1: --overwrite never destroys a folder ------------------------------------------
    Case("overwrite-folder-as-mask", "1", "`-o` names an existing folder, with `--overwrite`",
         (*MAP, "-o", "{tmp}/maps.tif", "--overwrite"),
         {"scene.tif": "scene", "maps.tif/notes.txt": "text:field notes"},
         says="maps.tif is a folder; momo-geo replaces files, never folders"),
    Case("overwrite-folder-as-vector", "1", "`--vector` names an existing folder, `--overwrite`",
         (*MAP, "--vector", "{tmp}/craters.gpkg", "--overwrite"),
         {"scene.tif": "scene", "craters.gpkg/notes.txt": "text:field notes"},
         says="craters.gpkg is a folder; momo-geo replaces files, never folders"),
    Case("mask-over-the-working-folder", "1", "`-o . --overwrite`",
         (*MAP, "-o", ".", "--overwrite"), {"scene.tif": "scene"},
         says="refusing to write over the working folder"),
    Case("import-weights-over-a-folder", "1",
         "`import-weights … -o somefolder --overwrite` on a folder that is not a bundle",
         ("import-weights", "{tmp}/momo.pth", "--arch", "vit_small", "-o", "{tmp}/somefolder",
          "--overwrite"),
         {"momo.pth": "text:not really a checkpoint", "somefolder/thesis.tex": "text:years"},
         says="somefolder is a folder that is not a momo-geo model bundle"),
    Case("import-weights-over-the-working-folder", "1",
         "`import-weights … -o . --overwrite` in the folder holding the input",
         ("import-weights", "momo.pth", "--arch", "vit_small", "-o", ".", "--overwrite"),
         {"work/momo.pth": "text:not really a checkpoint"}, cwd="work",
         says="refusing to write over the working folder"),
    Case("import-weights-over-a-parent", "1",
         "`import-weights … -o .. --overwrite`: the parent of the working folder",
         ("import-weights", "momo.pth", "--arch", "vit_small", "-o", "..", "--overwrite"),
         {"work/momo.pth": "text:not really a checkpoint"}, cwd="work",
         says="refusing to write over a parent of the working folder"),
    Case("mask-over-the-scene", "1", "`-o` names the input scene itself, with `--overwrite`",
         (*MAP, "-o", "{tmp}/scene.tif", "--overwrite"), {"scene.tif": "scene"},
         says="refusing to write over the input"),
    # ---- item 2: concurrent runs --------------------------------------------------------------
    Case("concurrent-same-outputs", "2",
         "the same `map` twice at once (same outputs, both with `--overwrite`)",
         ("map", "{tmp}/big.tif", "--model", "{model}", "-q", "--overwrite", *SLOW),
         {"big.tif": "big"}, action="concurrent",
         says="big_mask.tif is being written by another momo-geo run"),
    # ---- item 4: shapefile sidecars -----------------------------------------------------------
    Case("shapefile-sidecar-exists", "4",
         "`--vector out.shp` where only `out.dbf` exists (another dataset's table)",
         (*MAP, "--vector", "{tmp}/out.shp"), {"scene.tif": "scene", "out.dbf": "text:table"},
         says="out.dbf exists (part of out.shp); pass --overwrite"),
    Case("shapefile-overwrite-drops-stale-index", "4",
         "`--vector out.shp --overwrite` over an old shapefile with a `.qix` index",
         (*MAP, "--vector", "{tmp}/out.shp", "--overwrite"),
         {"scene.tif": "scene", "out.shp": "text:old", "out.dbf": "text:old",
          "out.qix": "text:old index"}, exit=0,
         created=("scene_mask.tif", "out.shx", "out.prj", "out.cpg"),
         changed=("out.shp", "out.dbf"), removed=("out.qix",)),
    # ---- item 5: stopping a run ---------------------------------------------------------------
    Case("sigterm-while-mapping", "5", "SIGTERM (QGIS, systemd, SLURM, `timeout`) mid-run",
         ("map", "{tmp}/big.tif", "--model", "{model}", "-q", *SLOW), {"big.tif": "big"},
         action="signal:TERM", exit=143,
         says="Interrupted: no scene was completed; no partial output was left behind."),
    Case("sighup-while-mapping", "5", "SIGHUP (terminal closed, ssh dropped) mid-run",
         ("map", "{tmp}/big.tif", "--model", "{model}", "-q", *SLOW), {"big.tif": "big"},
         action="signal:HUP", exit=129,
         says="Interrupted: no scene was completed; no partial output was left behind."),
    Case("ctrl-c-while-mapping", "5", "Ctrl-C mid-run",
         ("map", "{tmp}/big.tif", "--model", "{model}", "-q", *SLOW), {"big.tif": "big"},
         action="signal:INT", exit=130,
         says="Interrupted: no scene was completed; no partial output was left behind."),
    Case("sigterm-with-workers", "5", "SIGTERM mid-run with `--workers 2` and two scenes",
         ("map", "{tmp}/big.tif", "{tmp}/big2.tif", "--model", "{model}", "-q", "--workers",
          "2", *SLOW), {"big.tif": "big", "big2.tif": "big"}, action="signal:TERM", exit=143,
         says="Interrupted: no scene was completed; no partial output was left behind."),
    # ---- item 6: batches ----------------------------------------------------------------------
    Case("batch-with-a-bad-scene", "6", "three scenes, the middle one not a raster",
         ("map", "{tmp}/a.tif", "{tmp}/bad.tif", "{tmp}/b.tif", "--model", "{model}", "-q",
          "--no-vector"),
         {"a.tif": "scene", "bad.tif": "text:not a raster", "b.tif": "scene"},
         says="bad.tif: not a readable raster", created=("a_mask.tif", "b_mask.tif")),
    # ---- item 11: output names ----------------------------------------------------------------
    Case("mask-named-png", "11", "`-o mask.png`", (*MAP, "-o", "{tmp}/mask.png"),
         {"scene.tif": "scene"}, says="mask.png: the class mask is written as a GeoTIFF"),
    Case("vector-named-kml", "11", "`--vector out.kml`", (*MAP, "--vector", "{tmp}/out.kml"),
         {"scene.tif": "scene"}, says="vector format must be .gpkg, .shp or .geojson"),
    Case("parenthesis-scene-name", "11", "a scene called `(copy) scene.tif`, default outputs",
         ("map", "{tmp}/(copy) scene.tif", "--model", "{model}", "-q"),
         {"(copy) scene.tif": "scene"}, exit=0,
         created=("(copy) scene_mask.tif", "(copy) scene_features.gpkg")),
    Case("semicolon-geojson", "11", "`--vector 'a;b.geojson'`",
         (*MAP, "--vector", "{tmp}/a;b.geojson"), {"scene.tif": "scene"}, exit=0,
         created=("scene_mask.tif", "a;b.geojson")),
    Case("semicolon-shapefile", "11", "`--vector '#1;b.shp'`",
         (*MAP, "--vector", "{tmp}/#1;b.shp"), {"scene.tif": "scene"}, exit=0,
         created=("scene_mask.tif", "#1;b.shp", "#1;b.shx", "#1;b.dbf", "#1;b.prj",
                  "#1;b.cpg")),
    Case("long-output-name", "11", "a 250-character vector name",
         (*MAP, "--vector", "{tmp}/" + "x" * 245 + ".gpkg"), {"scene.tif": "scene"}, exit=0,
         created=("scene_mask.tif", "x" * 245 + ".gpkg")),
    Case("names-like-work-files", "11", "outputs named like the engine's own work files",
         (*MAP, "-o", "{tmp}/_work_confidence.tif", "--vector", "{tmp}/_work_mask.gpkg"),
         {"scene.tif": "scene"}, exit=0,
         created=("_work_confidence.tif", "_work_mask.gpkg")),
    Case("existing-mask", "11", "the mask exists, no `--overwrite`", MAP,
         {"scene.tif": "scene", "scene_mask.tif": "text:yesterday's mask"},
         says="scene_mask.tif exists; pass --overwrite to replace it"),
    Case("output-folder-missing", "11", "`-o` into a folder that does not exist",
         (*MAP, "-o", "{tmp}/nowhere/mask.tif"), {"scene.tif": "scene"},
         says="nowhere: output folder does not exist"),
    Case("two-outputs-one-file", "11", "`-o x.tif --probabilities x.tif`",
         (*MAP, "-o", "{tmp}/x.tif", "--probabilities", "{tmp}/x.tif"),
         {"scene.tif": "scene"}, says="must be different files"),
    # ---- item 13: disk full -------------------------------------------------------------------
    Case("disk-fills-up", "13", "the disk fills up while the mask is written (`ulimit -f`)",
         ("map", "{tmp}/noise.tif", "--model", "{model}", "-q", "--no-vector"),
         {"noise.tif": "noise"}, file_size_limit=100_000,
         says="writing the class mask {tmp}/noise_mask.tif failed: File too large"),
    # ---- item 14: streams ---------------------------------------------------------------------
    Case("unknown-option", "14", "a mistyped option (`--tilee 5`)", (*MAP, "--tilee", "5"),
         {"scene.tif": "scene"}, says="No such option '--tilee'"),
    Case("missing-argument", "14", "`momo-geo map` with no scene", ("map",),
         says="Missing argument"),
    Case("bad-option-value", "14", "`--tile big`", (*MAP, "--tile", "big"),
         {"scene.tif": "scene"}, says="'big' is not a valid integer"),
    Case("shapefile-no-library-warnings", "14",
         "`--vector out.shp --circles` (pyogrio launders long field names)",
         (*MAP, "--vector", "{tmp}/out.shp", "--circles"), {"scene.tif": "scene"}, exit=0,
         created=("scene_mask.tif", "out.shp", "out.shx", "out.dbf", "out.prj", "out.cpg")),
]



# ---- items 8-10, 12, 13: inputs that are wrong the way real data is wrong ---------------------
# Scenes with another CRS or geotransform are VRTs over the small scene: text files, as a user
# who fixes (or breaks) a georeference without copying pixels has them.


def _vrt(srs: str, geotransform: str, size: int = 96, offset: int = 0) -> str:
    """A VRT of ``scene.tif`` with ``srs`` and ``geotransform`` (GDAL order), the scene placed at
    ``offset`` in a ``size``-pixel raster (the rest 0, not declared nodata: a black collar)."""
    return (f'text:<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{srs}</SRS>'
            f"<GeoTransform>{geotransform}</GeoTransform>"
            '<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
            '<SourceFilename relativeToVRT="1">scene.tif</SourceFilename><SourceBand>1'
            '</SourceBand><SrcRect xOff="0" yOff="0" xSize="96" ySize="96"/>'
            f'<DstRect xOff="{offset}" yOff="{offset}" xSize="96" ySize="96"/>'
            "</SimpleSource></VRTRasterBand></VRTDataset>")


def _card(classes: str = '{"id": 0, "name": "background", "color": "#000000"}, '
                         '{"id": 1, "name": "crater", "color": "#ff8000"}',
          extra: str = "") -> dict[str, str]:
    """The files of a model bundle whose card has these classes (and ``extra`` JSON fields)."""
    card = ('text:{"schema_version": 1, "name": "odd", "task": "segmentation", '
            '"architecture": {"kind": "conv", "encoder": "conv"}, "in_chans": 1, '
            f'"classes": [{classes}]{extra}}}')
    return {"odd.bundle/card.json": card, "odd.bundle/weights.safetensors": "text:weights"}


MARS_GT = "0, 6, 0, 0, 0, -6"
ODD = ("map", "{tmp}/scene.tif", "--model", "{tmp}/odd.bundle", "-q")
CASES += [
    # ---- item 8: undeclared black collars -------------------------------------------------------
    Case("undeclared-black-collar", "8", "a scene in a value-0 collar it does not declare",
         ("map", "{tmp}/framed.vrt", "--model", "{model}", "-q", "--no-vector"),
         {"scene.tif": "scene", "framed.vrt": _vrt("IAU_2015:49910", MARS_GT, 128, 16)},
         exit=0, says="around the image (44 % of the scene) is treated as nodata (--no-frame",
         created=("framed_mask.tif",)),
    Case("nodata-value-out-of-range", "8", "`--nodata 300` on an 8-bit scene",
         (*MAP, "--nodata", "300"), {"scene.tif": "scene"},
         says="--nodata 300 is not a value scene.tif's uint8 pixels can hold"),
    # ---- item 9: another body's CRS -------------------------------------------------------------
    Case("earth-crs", "9", "a Mars image labelled EPSG:4326",
         ("map", "{tmp}/earth.vrt", "--model", "{model}", "-q"),
         {"scene.tif": "scene", "earth.vrt": _vrt("EPSG:4326", "10, 1e-4, 0, 20, 0, -1e-4")},
         says="earth.vrt is in an Earth CRS (EPSG:4326 (WGS 84)), but momo-geo's models map "
              "Mars: give the scene its Mars CRS, or pass --assume-mars"),
    Case("earth-crs-assume-mars", "9", "the same with `--assume-mars`",
         ("map", "{tmp}/earth.vrt", "--model", "{model}", "-q", "--no-vector", "--assume-mars"),
         {"scene.tif": "scene", "earth.vrt": _vrt("EPSG:4326", "10, 1e-4, 0, 20, 0, -1e-4")},
         exit=0, says="its EPSG:4326 (WGS 84) coordinates are read on the Mars sphere as "
                      "IAU_2015:49900", created=("earth_mask.tif",)),
    Case("utm-assume-mars", "9", "a scene labelled UTM zone 33N, with `--assume-mars`",
         ("map", "{tmp}/utm.vrt", "--model", "{model}", "-q", "--assume-mars"),
         {"scene.tif": "scene", "utm.vrt": _vrt("EPSG:32633", "500000, 6, 0, 10000, 0, -6")},
         says="EPSG:32633 (WGS 84 / UTM zone 33N) is a UTM zone, which exists only on Earth"),
    Case("moon-crs", "9", "a scene in the Moon's geographic CRS",
         ("map", "{tmp}/moon.vrt", "--model", "{model}", "-q"),
         {"scene.tif": "scene", "moon.vrt": _vrt("IAU_2015:30100", "10, 1e-4, 0, 20, 0, -1e-4")},
         says="moon.vrt is in a Moon CRS (IAU_2015:30100"),
    # ---- item 10: degenerate georeference -------------------------------------------------------
    Case("nan-pixel-size", "10", "`info` on a geotransform holding NaN",
         ("info", "{tmp}/nan.vrt"),
         {"scene.tif": "scene", "nan.vrt": _vrt("IAU_2015:49910", "nan, 6, 0, 0, 0, -6")},
         says="degenerate georeference: the geotransform holds NaN or infinity"),
    Case("zero-pixel-size", "10", "`map` on a zero pixel width",
         ("map", "{tmp}/zero.vrt", "--model", "{model}", "-q"),
         {"scene.tif": "scene", "zero.vrt": _vrt("IAU_2015:49910", "0, 0, 0, 0, 0, -6")},
         says="degenerate georeference: the pixel size is zero"),
    Case("rotated-90", "10", "`map` on a grid rotated by 90°",
         ("map", "{tmp}/rot.vrt", "--model", "{model}", "-q"),
         {"scene.tif": "scene", "rot.vrt": _vrt("IAU_2015:49910", "0, 0, 6, 0, 6, 0")},
         says="the pixel grid is rotated by 90° from map east"),
    Case("past-the-pole", "10", "`info` on a scene reaching 222°S",
         ("info", "{tmp}/pole.vrt"),
         {"scene.tif": "scene", "pole.vrt": _vrt("IAU_2015:49900", "0, 0.1, 0, -30, 0, -2")},
         says="the scene reaches 222.0°S, past the pole"),
    # ---- item 12: model cards checked at load ---------------------------------------------------
    Case("card-class-id-gap", "12", "a model card with class ids 0 and 2", ODD,
         {"scene.tif": "scene", **_card('{"id": 0, "name": "background", "color": "#000000"}, '
                                        '{"id": 2, "name": "crater", "color": "#ff8000"}')},
         says="class ids must be 0 to 1 in order"),
    Case("card-bad-colour", "12", "a class colour `orange`", ODD,
         {"scene.tif": "scene", **_card('{"id": 0, "name": "background", "color": "#000000"}, '
                                        '{"id": 1, "name": "crater", "color": "orange"}')},
         says="class 'crater' has colour 'orange'; colours are written #rrggbb"),
    Case("card-std-zero", "12", "normalisation with std 0", ODD,
         {"scene.tif": "scene", **_card(extra=', "normalization": {"mean": 0.5, "std": 0}')},
         says="normalization needs a finite mean and a std above 0"),
    Case("card-without-hash", "12", "a card without `weights_sha256`", ODD,
         {"scene.tif": "scene", **_card()},
         says="the model card has no weights_sha256, so its weights cannot be checked; pass "
              "--trust-unhashed"),
    # ---- item 13: options and label files -------------------------------------------------------
    Case("simplify-nan", "13", "`--simplify nan`", (*MAP, "--simplify", "nan"),
         {"scene.tif": "scene"}, says="simplify must be a finite number, not nan"),
    Case("bad-yolo-label-line", "13", "`evaluate` on a label file with a 4-number line",
         ("evaluate", "--task", "themis-craters", "--data", "{tmp}/mine", "--model", "{model}",
          "--bootstrap", "0"),
         {"mine/images/a.tif": "scene", "mine/labels/a.txt": "text:0 0.5 0.5 0.2 0.2\n0 0.5 0.5"},
         says="a.txt, line 2: expected 'class cx cy w h'"),
]

def render() -> str:
    """``docs/reliability.md``: the matrix, case by case, grouped by the issue's items."""
    lines = [
        "# Reliability: what the user gets when things go wrong",
        "",
        "<!-- Generated by `python tests/redteam_cases.py` from the case table in",
        "     tests/redteam_cases.py; tests/test_redteam.py runs every case and checks that",
        "     this file is current. Do not edit by hand. -->",
        "",
        "Each row is a real `momo-geo` process run by the red-team suite (`pytest -m redteam`,",
        "part of the default run). For every case the suite checks the exit status, that stderr",
        "holds exactly one line (none for a success) containing the text shown, and the exact",
        "set of files before and after: every file not named as written, replaced or removed is",
        "byte-for-byte what it was, and no staging folder or lock file is left.",
        "",
        "Exit status: 0 success, 1 any user error (click's usage errors included) or a batch",
        "in which a scene failed, 128 + the signal for a stopped run (130 Ctrl-C, 143 SIGTERM,",
        "129 SIGHUP).",
        "",
        "| item | case | the user does | the user gets |",
        "|---|---|---|---|",
    ]
    for case in sorted(CASES, key=lambda c: (int(c.item), CASES.index(c))):
        does = case.does.replace("|", "\\|")
        gets = case.gets().replace("|", "\\|").replace("{tmp}/", "")
        lines.append(f"| {case.item} | `{case.name}` | {does} | {gets} |")
    lines += ["", "Files the cases start from:", ""]
    lines += [f"- `{kind}`: {text}" for kind, text in FILE_KINDS.items()]
    lines += ["", "How a case is run:", ""]
    lines += [f"- `{name}`: {text}" for name, text in ACTIONS.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC.relative_to(ROOT)} ({len(CASES)} cases)", file=sys.stderr)
