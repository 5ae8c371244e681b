"""The archive's manifest: one SQLite table saying, for every scene, what happened to it.

Why SQLite: it ships with Python, a commit is atomic (a crash or Ctrl-C never leaves a
half-written manifest), a geologist can open it in QGIS, DB Browser or ``sqlite3``, and the next
run reads it to resume. Only the process that runs :func:`~momo_geo.archive.map_archive` writes
it (workers return their records), so there is one writer and no locking problem on a shared
file system.

A scene's row is keyed by its file name, which also names its outputs; the path it was read from
is kept beside it, so an archive folder can be moved and still resume.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from momo_geo.errors import MomoGeoError

MANIFEST_NAME = "manifest.sqlite"
PENDING, DONE, FAILED = "pending", "done", "failed"
NOT_IN_HASH = ("overwrite", "device", "batch_size")
"""Options that do not change a scene's outputs: changing them does not make a done scene stale."""


@dataclass
class SceneRecord:
    """One row of the manifest."""

    name: str
    """The scene's file name (the key; it also names the outputs)."""
    path: str
    status: str = PENDING
    attempts: int = 0
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    features: int | None = None
    sensor: str | None = None
    error: str | None = None
    """One line: why the last attempt failed."""
    mask_path: str | None = None
    vector_path: str | None = None
    model: str | None = None
    model_hash: str | None = None
    options_hash: str | None = None
    worker: str | None = None
    """The Dask worker (address) that mapped it."""


_COLUMNS = [f.name for f in fields(SceneRecord)]
_TYPES = {"attempts": "INTEGER", "features": "INTEGER", "seconds": "REAL"}
_SCHEMA = ("CREATE TABLE IF NOT EXISTS scenes ("
           + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" + (" PRIMARY KEY" if c == "name" else "")
                       for c in _COLUMNS) + ")")


def now() -> str:
    """UTC time as ISO 8601 with seconds, the manifest's time format."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def options_hash(options: dict[str, Any]) -> str:
    """A short hash of the options that shape a scene's outputs (see :data:`NOT_IN_HASH`)."""
    shaping = {k: v for k, v in sorted(options.items()) if k not in NOT_IN_HASH}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """The manifest of one archive folder; every change is committed at once."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / MANIFEST_NAME
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit
            self.db.execute("PRAGMA journal_mode=DELETE")  # plain file: fine on NFS / Lustre
            self.db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise MomoGeoError(f"{self.path}: not a readable manifest ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, name: str) -> SceneRecord | None:
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM scenes WHERE name = ?",
                              (name,)).fetchone()
        return SceneRecord(*row) if row else None

    def records(self) -> Iterator[SceneRecord]:
        for row in self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM scenes ORDER BY name"):
            yield SceneRecord(*row)

    def put(self, record: SceneRecord) -> None:
        """Insert or replace a scene's row (one atomic commit)."""
        values = [getattr(record, c) for c in _COLUMNS]
        self.db.execute(f"INSERT OR REPLACE INTO scenes ({', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_COLUMNS))})", values)

    def put_many(self, records: Iterable[SceneRecord]) -> None:
        """Several rows in one transaction."""
        self.db.execute("BEGIN")
        try:
            for record in records:
                self.put(record)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
