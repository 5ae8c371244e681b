"""Reserving, staging and committing outputs, so that a run never destroys a user's files.

Every command that writes (``map``, ``sample-scene``, ``import-weights``, ``merge``, ``evl``, and
the QGIS plugin through the engine) obeys the same four rules, kept here because each is easy to
get subtly wrong when written twice:

1. **Overwrite replaces files, never folders**, except a folder that is provably a model bundle
   this tool wrote (nothing in it but ``card.json`` and ``weights.safetensors``, the card
   readable). The file-system root, the home folder, the working folder and its parents, and
   anything that is or holds an input are refused whatever the flags say.
2. **An output is reserved when the run starts**: an exclusive lock file beside it, created with
   ``O_CREAT | O_EXCL``, so a second run aimed at the same file fails at once with one line
   instead of silently replacing the first run's result at the end. A lock whose process has
   died (``kill -9``) is taken over.
3. **Outputs are staged and committed as one unit.** Each output is written under a neutral name
   (``out.tif``, ``out.shp``: no ``;``, ``#`` or 250-character names reach GDAL) in a hidden
   staging folder beside its target, and all of a run's outputs are renamed into place together
   at the end, with SIGINT/SIGTERM/SIGHUP held back meanwhile: either every output appears with
   its sidecars, or none does and any file it would have replaced is put back.
4. **Sidecars are part of an output.** ``out.dbf`` existing is as much "``out.shp`` exists" as
   ``out.shp`` itself; with ``--overwrite`` an old dataset's stale sidecars (a ``.qix`` index, an
   ``.aux.xml``) go with it, so they cannot describe the new file wrongly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from momo_geo.errors import MomoGeoError

LOCK_PREFIX = ".momo-geo-lock-"
STAGING_PREFIX = ".momo-geo-partial-"
STAGED_STEM = "out"
"""The neutral name outputs are written under while staged."""

SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".fbn", ".fbx",
                      ".ain", ".aih", ".atx", ".ixs", ".mxs", ".qmd", ".qpj")
"""Files ``NAME.ext`` that belong to ``NAME.shp`` (GDAL, ArcGIS, QGIS and MapInfo indexes)."""
NAME_SIDECARS = (".aux.xml", ".ovr", ".msk", ".xml", "-wal", "-shm", "-journal")
"""Files ``NAME.suffix<this>`` that belong to any dataset (GDAL's PAM, external overviews and
masks, ArcGIS metadata, SQLite/GeoPackage journals)."""
BUNDLE_FILES = frozenset({"card.json", "weights.safetensors"})
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                 if hasattr(signal, name))


# --------------------------------------------------------------------------------------------
# what an output is made of, and what may be replaced


def sidecars(path: str | os.PathLike[str]) -> list[Path]:
    """The sidecar files that would belong to the dataset ``path`` (existing or not)."""
    path = Path(path)
    names = [path.name + s for s in NAME_SIDECARS]
    if path.suffix.lower() == ".shp":
        stem = path.name[:-4]
        names += [stem + s for s in SHAPEFILE_SIDECARS]
        names += [stem + s.upper() for s in SHAPEFILE_SIDECARS]
    return [path.with_name(n) for n in names]


def existing_parts(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and its sidecars, those that exist (the main file first)."""
    path = Path(path)
    return [p for p in (path, *sidecars(path)) if os.path.lexists(p)]


def is_bundle_folder(path: str | os.PathLike[str]) -> bool:
    """True only for a folder holding exactly a readable momo-geo card and its weights."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        if set(os.listdir(path)) != BUNDLE_FILES:
            return False
        card = json.loads((path / "card.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and {"schema_version", "weights_sha256", "task"} <= set(card)


def _protected(path: Path, inputs: Iterable[str | os.PathLike[str]]) -> str | None:
    """Why ``path`` may never be written over, or None."""
    real = Path(os.path.realpath(path))
    cwd = Path.cwd().resolve()
    if real == Path(real.anchor):
        return "the file-system root"
    if real == Path.home().resolve():
        return "your home folder"
    if real == cwd:
        return "the working folder"
    if real in cwd.parents:
        return "a parent of the working folder"
    for item in inputs:
        item_real = Path(os.path.realpath(item))
        if real == item_real:
            return f"the input {item}"
        if real in item_real.parents:
            return f"a folder holding the input {item}"
    return None


def check_not_a_folder(path: str | os.PathLike[str], *,
                       inputs: Iterable[str | os.PathLike[str]] = (),
                       bundle: bool = False) -> Path:
    """One-line error if writing ``path`` could replace a folder (rule 1 above): the root, the
    home or working folder or a parent, an input or a folder holding one, any folder (for a
    ``bundle``: any folder that is not provably a bundle)."""
    path = Path(path)
    reason = _protected(path, inputs)
    if reason is not None:
        raise MomoGeoError(f"{path}: refusing to write over {reason}")
    if path.name in ("", ".", ".."):
        raise MomoGeoError(f"{path}: refusing to write over a folder; give a file name")
    if path.is_dir() and not path.is_symlink():
        if not bundle:
            raise MomoGeoError(f"{path} is a folder; momo-geo replaces files, never folders")
        if not is_bundle_folder(path):
            raise MomoGeoError(f"{path} is a folder that is not a momo-geo model bundle "
                               "(card.json and weights.safetensors only); refusing to replace it")
    return path


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), bundle: bool = False) -> Path:
    """One-line error unless ``path`` may be written now (``bundle``: a bundle folder)."""
    path = check_not_a_folder(path, inputs=inputs, bundle=bundle)
    parent = path.parent
    if not parent.is_dir() and not bundle:  # a bundle's parent folders are made for it
        raise MomoGeoError(f"{parent}: output folder does not exist")
    existing = existing_parts(path)
    if existing and not overwrite:
        part = "" if existing[0] == path else f" (part of {path.name})"
        raise MomoGeoError(f"{existing[0]} exists{part}; pass --overwrite to replace it")
    owner = _live_owner(_lock_path(path))
    if owner is not None:
        raise MomoGeoError(f"{path} is being written by another momo-geo run ({owner}); wait "
                           "for it to finish or choose another name")
    return path


# --------------------------------------------------------------------------------------------
# reservations (lock files)


def _lock_path(path: Path) -> Path:
    """A short lock name beside ``path`` (a 250-character output name must still work)."""
    digest = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return path.parent / f"{LOCK_PREFIX}{digest}"


def _live_owner(lock: Path) -> str | None:
    """``"process N on HOST"`` holding ``lock``, or None when free or held by a dead process."""
    try:
        text = lock.read_text().split()
    except FileNotFoundError:
        return None
    except OSError:
        return "unknown process"
    if len(text) < 2 or not text[0].isdigit():
        return "a process that is just starting"  # created, not yet written
    pid, host = int(text[0]), text[1]
    if host != socket.gethostname():
        return f"process {pid} on {host}"
    return f"process {pid}" if _alive(pid) else None


def _acquire(path: Path) -> Path:
    """Create ``path``'s lock file exclusively, or a one-line error naming its holder."""
    lock = _lock_path(path)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _live_owner(lock)
            if owner is not None:
                raise MomoGeoError(f"{path} is being written by another momo-geo run ({owner});"
                                   " wait for it to finish or choose another name") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # left by a run that was killed: take it over
            continue
        except OSError as exc:
            raise MomoGeoError(f"{path.parent}: cannot write there ({exc.strerror})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        return lock
    raise MomoGeoError(f"{path}: could not reserve it (another run keeps taking it)")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C, SIGTERM and SIGHUP while a commit moves files (main thread only)."""
    if (not hasattr(signal, "pthread_sigmask")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --------------------------------------------------------------------------------------------
# one run's outputs


class OutputSet:
    """The outputs of one run: checked and reserved on entry, staged, committed together.

    ``with OutputSet([mask, vector], overwrite=False, inputs=[scene]) as outputs:`` checks every
    target (rules 1 and 4 above) and creates its lock; ``outputs.path(target)`` is where to write
    it; ``outputs.scratch()`` a private folder for work files; ``outputs.commit()`` renames all
    into place. Leaving the block without a commit (an error, Ctrl-C) removes everything staged;
    the locks always go.
    """

    def __init__(self, targets: Iterable[str | os.PathLike[str] | None], *,
                 overwrite: bool = False, inputs: Iterable[str | os.PathLike[str]] = (),
                 bundle: bool = False) -> None:
        self.targets = [Path(t) for t in targets if t is not None]
        self.overwrite, self.bundle = overwrite, bundle
        self.inputs = [Path(i) for i in inputs]
        self.committed = False
        self._locks: list[Path] = []
        self._roots: dict[Path, Path] = {}
        self._staged: dict[Path, Path] = {}
        real = [os.path.realpath(t) for t in self.targets]
        if len(set(real)) != len(real):
            raise MomoGeoError("outputs must be different files: "
                               + ", ".join(str(t) for t in self.targets))

    def __enter__(self) -> OutputSet:
        _complaints.clear()  # a new run: earlier library messages explain nothing here
        try:
            for target in self.targets:
                check_target(target, overwrite=self.overwrite, inputs=self.inputs,
                             bundle=self.bundle)
                self._locks.append(_acquire(target))
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._discard()
        finally:
            self._release()

    # staging ---------------------------------------------------------------------------------
    def _root(self, folder: Path) -> Path:
        key = Path(os.path.realpath(folder))
        if key not in self._roots:
            try:
                self._roots[key] = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                                         dir=folder))
            except OSError as exc:
                raise MomoGeoError(f"{folder}: cannot write there ({exc.strerror})") from None
        return self._roots[key]

    def path(self, target: str | os.PathLike[str]) -> Path:
        """Where to write ``target`` now: a neutral name in its own staging sub-folder."""
        target = Path(target)
        if target not in self.targets:
            raise ValueError(f"{target} is not one of this run's outputs")
        if target not in self._staged:
            index = self.targets.index(target)
            folder = self._root(target.parent) / str(index)
            folder.mkdir()
            suffix = target.suffix if target.suffix[1:].isalnum() else ""
            self._staged[target] = folder / (STAGED_STEM + suffix)
        return self._staged[target]

    def scratch(self) -> Path:
        """A private folder beside the first output for work files (removed at the end)."""
        folder = self._root(self.targets[0].parent) / "work"
        folder.mkdir(exist_ok=True)
        return folder

    def _moves(self, target: Path) -> list[tuple[Path, Path]]:
        """(staged file, final name) for ``target`` and its sidecars; the main file last."""
        staged = self._staged.get(target)
        if staged is None or not os.path.lexists(staged):
            raise MomoGeoError(f"{target}: nothing was written")
        stem = target.name[: -len(target.suffix)] if target.suffix else target.name
        moves = []
        for item in sorted(staged.parent.iterdir()):
            if item == staged:
                continue
            if item.name.startswith(staged.name):
                moves.append((item, target.with_name(target.name + item.name[len(staged.name):])))
            elif item.name.startswith(STAGED_STEM + "."):
                moves.append((item, target.with_name(stem + item.name[len(STAGED_STEM):])))
        return [*moves, (staged, target)]

    def commit(self) -> None:
        """Rename every staged output (with its sidecars) into place, all or none."""
        if self.committed:
            return
        plan = [(t, self._moves(t)) for t in self.targets]
        backups = self._root(self.targets[0].parent) / "replaced"
        placed: list[Path] = []
        moved_away: list[tuple[Path, Path]] = []
        with _signals_held():
            try:
                for index, (target, moves) in enumerate(plan):
                    old = existing_parts(target)
                    old += [dst for _, dst in moves if os.path.lexists(dst) and dst not in old]
                    if old and not self.overwrite:
                        raise MomoGeoError(f"{old[0]} appeared while momo-geo was writing "
                                           f"{target.name}; nothing was replaced")
                    if old:
                        self._check_replaceable(target, old)
                        keep = backups / str(index)
                        keep.mkdir(parents=True, exist_ok=True)
                        for item in old:
                            _rename(item, keep / item.name, target)
                            moved_away.append((keep / item.name, item))
                    for src, dst in moves:
                        _place(src, dst, target)
                        placed.append(dst)
            except BaseException:
                _undo(placed, moved_away)
                raise
            self.committed = True

    def _check_replaceable(self, target: Path, old: list[Path]) -> None:
        for item in old:
            if item.is_dir() and not item.is_symlink() and not (
                    self.bundle and item == target and is_bundle_folder(item)):
                raise MomoGeoError(f"{item} is a folder; momo-geo replaces files, never folders")

    def _discard(self) -> None:
        for root in self._roots.values():
            shutil.rmtree(root, ignore_errors=True)  # made by mkdtemp in this run: ours only
        self._roots.clear()
        self._staged.clear()

    def _release(self) -> None:
        for lock in self._locks:
            with contextlib.suppress(OSError):
                lock.unlink()
        self._locks.clear()


def _rename(src: Path, dst: Path, target: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise MomoGeoError(f"moving {src.name} into place for {target} failed: "
                           f"{exc.strerror or exc}") from None


def _place(src: Path, dst: Path, target: Path) -> None:
    """Move ``src`` to ``dst``, never over an existing file (which another program made)."""
    if os.path.lexists(dst):
        raise MomoGeoError(f"{dst} appeared while momo-geo was writing {target.name}; "
                           "nothing was replaced")
    if src.is_dir():
        _rename(src, dst, target)
        return
    try:
        os.link(src, dst)  # fails if dst exists: no window in which a new file is clobbered
        src.unlink()
    except FileExistsError:
        raise MomoGeoError(f"{dst} appeared while momo-geo was writing {target.name}; "
                           "nothing was replaced") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK,
                             errno.EOPNOTSUPP, errno.EACCES):
            raise MomoGeoError(f"writing {dst} failed: {exc.strerror or exc}") from None
        _rename(src, dst, target)  # a file system without hard links


def _undo(placed: list[Path], moved_away: list[tuple[Path, Path]]) -> None:
    """Take back what a failed commit placed and put the replaced files back."""
    for item in reversed(placed):
        with contextlib.suppress(OSError):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)  # a bundle this very commit just renamed into place
            else:
                item.unlink()
    for backup, original in reversed(moved_away):
        with contextlib.suppress(OSError):
            os.replace(backup, original)


def _write_errors() -> tuple[type[BaseException], ...]:
    """Exception types a failed write raises: the OS's, and GDAL's through the libraries that
    are loaded (a library not imported cannot have raised)."""
    kinds: list[type[BaseException]] = [OSError]
    for module, names in (("rasterio.errors", ("RasterioError",)),
                          ("rasterio._err", ("CPLE_BaseError",)),
                          ("pyogrio.errors", ("DataSourceError", "DataLayerError", "FieldError",
                                              "FeatureError", "GeometryError"))):
        loaded = sys.modules.get(module)
        kinds += [getattr(loaded, n) for n in names if loaded is not None and hasattr(loaded, n)]
    return tuple(kinds)


QUIET_LIBRARIES = {"quiet": False}
"""Set by the CLI (:func:`momo_geo.cli.quiet_libraries`): what C libraries print to stderr
while momo-geo writes is kept back, not replayed (``-v`` replays it)."""
_complaints: list[str] = []
"""What libtiff/GDAL printed during this process's writes: the first line is often the real
reason of a failure reported later and vaguely (libtiff says "File too large" on the write,
GDAL only "not recognized as being in a supported file format" when the file is read back)."""


@contextlib.contextmanager
def _c_stderr_captured() -> Iterator[None]:
    """Catch what C code writes to file descriptor 2 (libtiff's own error printer) meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        capture = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
        capture.close()
        if text.strip():
            _complaints.extend(line.strip() for line in text.splitlines() if line.strip())
            if not QUIET_LIBRARIES["quiet"]:
                sys.stderr.write(text)


@contextlib.contextmanager
def writing(what: str, target: str | os.PathLike[str]) -> Iterator[None]:
    """A failed write (disk full, file too large, no permission) as one line naming it:
    ``writing the class mask out/m.tif failed: No space left on device``."""
    try:
        with _c_stderr_captured():
            yield
    except MomoGeoError:
        raise
    except _write_errors() as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if _complaints:  # libtiff's word on the first failed write is the real reason
            module, _, said = _complaints[0].partition(": ")
            reason = f"{(said or module).rstrip('.')} ({module})" if said else module
        reason = " ".join(reason.split()) or type(exc).__name__
        _complaints.clear()
        raise MomoGeoError(f"writing the {what} {target} failed: {reason}") from None


def remove_leftovers(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders and lock files that runs killed outright (``kill -9``, power
    loss) left in ``folder``, those of processes no longer alive only; return what went."""
    removed = []
    for item in Path(folder).glob(f"{STAGING_PREFIX}*"):
        pid = item.name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and item.is_dir() and not _alive(int(pid)):
            shutil.rmtree(item, ignore_errors=True)  # named by momo-geo, its process gone
            removed.append(item)
    for lock in Path(folder).glob(f"{LOCK_PREFIX}*"):
        if _live_owner(lock) is None:
            with contextlib.suppress(OSError):
                lock.unlink()
                removed.append(lock)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged_output(path: str | os.PathLike[str], overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """One output: yield the path to write it to, commit it when the block ends without error."""
    with OutputSet([path], overwrite=overwrite, inputs=inputs) as outputs:
        yield outputs.path(path)
        outputs.commit()
