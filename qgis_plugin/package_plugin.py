"""Build the installable QGIS plugin zip: ``qgis_plugin/dist/momo_geo_plugin-<version>.zip``.

The zip holds one folder, ``momo_geo_plugin/``, as QGIS's "Install from ZIP" and the plugin
repository expect: the plugin's sources, icon, metadata (``version`` stamped from
``momo_geo.__version__``) and the project's LICENSE. Only allow-listed file types go in: no model
weights, no caches, no ``__pycache__``; the security scan (:mod:`security_check`) must pass first.
The zip is written to a temporary name and renamed, so a failed build leaves no partial zip.

Usage: ``python qgis_plugin/package_plugin.py [--dist DIR] [--no-scan]`` (``make plugin``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGIN_DIR = HERE / "momo_geo_plugin"
PACKAGE = PLUGIN_DIR.name
INCLUDE_SUFFIXES = {".py", ".txt", ".png", ".svg", ".md", ".qml", ".ui"}
MAX_BYTES = 20 * 1024 * 1024  # plugins.qgis.org refuses uploads above ~25 MB


def project_version() -> str:
    """``momo_geo.__version__``, read from the source so the build needs no installed package."""
    text = (ROOT / "momo_geo" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise SystemExit("momo_geo/__init__.py has no __version__")
    return match.group(1)


def stamped_metadata(version: str) -> str:
    text = (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8")
    text, count = re.subn(r"^version=.*$", f"version={version}", text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit("metadata.txt must have exactly one version= line")
    return text


def plugin_files(plugin_dir: Path = PLUGIN_DIR) -> list[Path]:
    """Files that go into the zip (relative to ``plugin_dir``), sorted for reproducible zips."""
    files = []
    for path in sorted(plugin_dir.rglob("*")):
        relative = path.relative_to(plugin_dir)
        if not path.is_file() or any(part.startswith((".", "__pycache__"))
                                     for part in relative.parts):
            continue
        if path.suffix.lower() in INCLUDE_SUFFIXES:
            files.append(relative)
    return files


def build(dist: Path = HERE / "dist", scan: bool = True) -> Path:
    """Write the zip into ``dist`` and return its path."""
    if scan:
        sys.path.insert(0, str(HERE))
        from security_check import scan as security_scan

        problems = security_scan(PLUGIN_DIR)
        if problems:
            raise SystemExit("security check failed:\n  " + "\n  ".join(problems))
    version = project_version()
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"{PACKAGE}-{version}.zip"
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=dist)
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in plugin_files():
                name = f"{PACKAGE}/{relative.as_posix()}"
                if relative.as_posix() == "metadata.txt":
                    archive.writestr(name, stamped_metadata(version))
                else:
                    archive.write(PLUGIN_DIR / relative, name)
            archive.write(ROOT / "LICENSE", f"{PACKAGE}/LICENSE")
        if Path(temporary).stat().st_size > MAX_BYTES:
            raise SystemExit(f"plugin zip is larger than {MAX_BYTES >> 20} MB")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=HERE / "dist")
    parser.add_argument("--no-scan", action="store_true", help="skip the security check")
    args = parser.parse_args(argv)
    target = build(args.dist, scan=not args.no_scan)
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(f"built {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} "
          f"({count} files, {target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
