"""One keyed, atomic, checksummed store for everything kdkit computes once and reads back: fine-tuned teachers,
teacher evaluations, Universal-KD probes and teacher-signal caches.

An entry is a folder ``<root>/<kind>/<key>`` (root: :func:`kdkit.assets.cache_dir`) holding its files and, written
last, ``manifest.json``::

    {"format": "kdkit-artifact", "version": 1, "meta": {...},
     "files": {"<relative posix path>": {"bytes": n, "sha256": "..."}}}

Why an entry is trusted only after :func:`verify`: a build is written into ``<key>.tmp-<pid>`` and renamed into
place when complete (:func:`atomic_dir`), so a crash leaves a leftover, never a half entry under the final name;
but copies, full disks and hand edits can still damage a finished entry, so sizes are always checked (a truncated
file) and sha256 by default (a corrupted one). A damaged or manifest-less entry reads as absent and is rebuilt.
Hashing runs at about 1.2 GB/s on one core from the page cache: milliseconds for JSON values, probes and
classification logits, about 0.4 s for a 440 MB fine-tuned teacher.

Leftover build folders of processes that no longer exist are removed by the next build of the same key. The
liveness check is local: two machines building into one shared cache folder at once is not supported.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdkit.assets import cache_dir
from kdkit.errors import CacheError

FORMAT = "kdkit-artifact"
VERSION = 1
MANIFEST = "manifest.json"
VALUE = "value.json"
# names atomic_dir gives to its build folder and to the entry it replaces
LEFTOVER = re.compile(r"\.(?:tmp|old)-(\d+)$")


def digest(payload: Any, size: int = 16) -> str:
    """Hex blake2b of ``payload`` as sorted-key JSON: the one way kdkit turns settings into a cache key, so equal
    settings give equal keys whatever the dict order (values JSON cannot encode are hashed as their ``str``)."""
    return hashlib.blake2b(json.dumps(payload, sort_keys=True, default=str).encode(), digest_size=size).hexdigest()


def sha256_file(path: Path, fsync: bool = False) -> str:
    """The file's sha256, read in 1 MiB chunks; with ``fsync`` also flushed to disk in the same pass, so sealing
    a freshly written file costs one read."""
    checksum = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            checksum.update(chunk)
        if fsync:
            os.fsync(f.fileno())
    return checksum.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (new files, a rename into it) durable: without it a power loss can undo a rename
    whose files were already flushed."""
    if os.name == "nt":  # Windows cannot open a folder to flush it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there, not probe it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, ValueError):  # not a number a process can have
        return False
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_dead_leftovers(final: Path) -> None:
    for path in final.parent.iterdir():
        match = LEFTOVER.search(path.name)
        if match and path.name[:match.start()] == final.name:
            pid = int(match.group(1))
            if pid != os.getpid() and not _alive(pid):
                _remove(path)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a folder that appears at ``final`` whole or not at all.

    Yields an empty ``<final>.tmp-<pid>`` beside ``final``. On normal exit its files are flushed and it is renamed
    to ``final``; an existing ``final`` is first moved aside to ``<final>.old-<pid>`` and deleted only after the
    rename, so the previous version stays whole until the new one is in place and a reader never sees a mix. On
    any exception (KeyboardInterrupt included) the build folder is removed and ``final`` is left as it was.
    Leftovers of builds of ``final`` whose process no longer exists are removed first, so they cannot accumulate.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _remove(old)
        moved = final.exists() or final.is_symlink()
        if moved:
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if moved:
                os.replace(old, final)
            raise
        fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise
    _remove(old)


@contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary file beside it and a rename, so ``path`` holds either
    its previous content or all of ``data``, even after a crash or power loss (whose leftover temporary file the
    next write removes)."""
    with _atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write_bytes` for a JSON value (indented, so it stays readable by hand)."""
    atomic_write_text(path, json.dumps(obj, indent=1))


def seal(folder: Path, meta: dict, *, name: str = MANIFEST) -> dict:
    """Flush every file under ``folder`` and write, as its last file, the manifest that :func:`verify` checks: the
    ``meta`` plus each file's size and sha256. A folder with its manifest is complete; one without is not."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path != folder / name:
            files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size,
                                                          "sha256": sha256_file(path, fsync=True)}
    manifest = {"format": FORMAT, "version": VERSION, "meta": meta, "files": files}
    for path in folder.rglob("*"):
        if path.is_dir():
            fsync_dir(path)
    atomic_write_json(folder / name, manifest)
    return manifest


def read_manifest(folder: Path, *, name: str = MANIFEST) -> dict:
    """The manifest :func:`seal` wrote in ``folder``, without checking the files; :class:`CacheError` when there is
    none or it cannot be read (a partial copy, another program's file, another format version)."""
    path = Path(folder) / name
    if not path.is_file():
        raise CacheError(f"'{folder}' has no {name}: it is not a complete kdkit artifact")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CacheError(f"manifest '{path}' cannot be read ({err})") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise CacheError(f"manifest '{path}' is not a kdkit artifact manifest (format {found!r}, expected {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise CacheError(f"manifest '{path}' has version {manifest.get('version')!r}; this kdkit reads {VERSION}")
    files = manifest.get("files")
    if not isinstance(manifest.get("meta"), dict) or not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)
            for entry in files.values()):
        raise CacheError(f"manifest '{path}' is incomplete: it needs a 'meta' dict and bytes and sha256 per file")
    return manifest


def verify(folder: Path, *, name: str = MANIFEST, hashes: bool = True) -> dict:
    """Check ``folder`` against its manifest and return the manifest: every listed file's size always (a truncated
    or missing file), its sha256 when ``hashes`` (a corrupted one). Raises :class:`CacheError` naming the file."""
    folder = Path(folder)
    manifest = read_manifest(folder, name=name)
    for relative, entry in manifest["files"].items():
        path = folder / relative
        if not path.is_file():
            raise CacheError(f"file '{path}' is missing")
        try:
            size = path.stat().st_size
            checksum = sha256_file(path) if hashes and size == entry["bytes"] else None
        except OSError as err:  # e.g. deleted by a concurrent rebuild of the same entry
            raise CacheError(f"file '{path}' cannot be read ({err})") from None
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "longer than the manifest says"
            raise CacheError(f"file '{path}' is {state}: {size} of {entry['bytes']} bytes")
        if hashes and checksum != entry["sha256"]:
            raise CacheError(f"file '{path}' is corrupt: its sha256 differs from the manifest")
    return manifest


class ArtifactStore:
    """Keyed entries ``<root>/<kind>/<key>`` built atomically and verified on every read.

    ``kind`` names the family ("teachers", "evaluations", "probes", "signals"); ``key`` is a :func:`digest`, or a
    readable slug ending in one. ``root`` defaults to :func:`kdkit.assets.cache_dir`, read at each call so that
    ``$KDKIT_CACHE`` set after construction still applies.
    """

    def __init__(self, root: Path | None = None):
        self._root = None if root is None else Path(root)

    @property
    def root(self) -> Path:
        return cache_dir() if self._root is None else self._root

    def path(self, kind: str, key: str) -> Path:
        """Where the entry lives, complete or not; ``kind`` and ``key`` must be plain folder names, so an entry
        can never be written outside its kind's folder."""
        for part in (kind, key):
            if not part or part in (".", "..") or "/" in part or "\\" in part or LEFTOVER.search(part):
                raise ValueError(f"artifact kind and key must be plain folder names, got {part!r}")
        return self.root / kind / key

    def _manifest(self, kind: str, key: str, hashes: bool) -> dict | None:
        folder = self.path(kind, key)
        if not (folder / MANIFEST).is_file():  # never built, interrupted, or written by an older kdkit: rebuild
            return None
        try:
            return verify(folder, hashes=hashes)
        except CacheError as err:
            print(f"[kdkit] ignoring a damaged cached {kind} entry, it will be rebuilt: {err}")
            return None

    def get(self, kind: str, key: str, *, hashes: bool = True) -> Path | None:
        """The entry's folder when it is complete and its files match the manifest (sha256 too when ``hashes``),
        else None, so the caller rebuilds it; a damaged entry is reported on one line, never raised."""
        return None if self._manifest(kind, key, hashes) is None else self.path(kind, key)

    def put(self, kind: str, key: str, build: Callable[[Path], None], meta: dict | None = None) -> Path:
        """Build the entry with ``build(folder)`` into a temporary folder, seal it with ``meta`` and rename it into
        place (:func:`atomic_dir`); returns its final folder. If ``build`` raises, the previous entry is kept."""
        final = self.path(kind, key)
        with atomic_dir(final) as tmp:
            build(tmp)
            seal(tmp, meta or {})
        return final

    def read_meta(self, kind: str, key: str, *, hashes: bool = False) -> dict | None:
        """The ``meta`` the entry was sealed with, when it is complete (every file at its full size; sha256 too
        when ``hashes``, which :meth:`get` checks by default), else None."""
        manifest = self._manifest(kind, key, hashes)
        return None if manifest is None else manifest["meta"]

    def get_json(self, kind: str, key: str) -> Any | None:
        """A small JSON value stored by :meth:`put_json`, checked against its sha256, so a hand-edited or truncated
        value reads as None and is recomputed."""
        folder = self.get(kind, key)
        if folder is None:
            return None
        try:
            return json.loads((folder / VALUE).read_text())
        except (OSError, ValueError):  # replaced by another process between the check and the read
            return None

    def put_json(self, kind: str, key: str, obj: Any, meta: dict | None = None) -> Path:
        """Store a small JSON value as a sealed entry holding ``value.json`` (:meth:`put`)."""
        return self.put(kind, key, lambda folder: (folder / VALUE).write_text(json.dumps(obj, indent=1)), meta)
