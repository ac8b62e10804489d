"""Folders published as whole versions behind one pointer file that is switched atomically.

A publisher builds a complete new version in a staging folder (``versions/.staging-<name>.*``),
renames it to ``versions/<name>`` and then switches the pointer: the pointer file is written
under a temporary name, flushed to disk and renamed over the old one (``os.replace``, one
``rename(2)``). A reader resolves the pointer once (``current``) and reads everything from the
folder it names, so it sees either the old version or the new one, whole, and never a missing
pointer: the rename replaces the file in one step.

Why a pointer file and not a ``current`` symlink swapped in the same way: both switch
atomically on a local filesystem, but a file needs no symlink support (Windows without developer
mode, some bind mounts and synced folders), survives any copy or archive of the home (``rsync``
without ``-l``, zip and many backup tools drop or follow symlinks, which would silently turn
the pointer into a copy or into nothing), and holds a plain version name, so a home moved
elsewhere keeps working and ``cat CURRENT`` says what serves.

After the switch, version folders other than the new one, the previous one and those a reader
holds are removed. A reader that resolved the pointer just before the switch still finds its
folder; one that must keep a version for longer (a serving process, a long query) reads it
through :meth:`PublishedFolder.reading`, which holds a shared lock on the version's lease file
(``versions/.<name>.lease``) until the block ends or the process dies (the kernel releases it):
no publish removes a held version, however many follow; the next publish after its release
does. Without a lease, the retention is the new version and the previous one. Publishing holds an exclusive lock
(``.CURRENT.lock``; released by the kernel when the process dies), so a staging folder found
while holding it was left by a killed publish: it is removed, and never pointed at. Entries of a
legacy layout (``legacy``: glob patterns relative to the root) are removed by the first publish.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: the Dagster pool already runs one publisher at a time
    fcntl = None

T = TypeVar("T")
STAGING_PREFIX = ".staging-"


class NotPublishedError(FileNotFoundError):
    """No version is published (or the pointer names a folder that is gone)."""


@dataclass(frozen=True)
class Cleanup:
    """What a publish removed, by kind (paths relative to the root)."""

    half_built: tuple[str, ...] = ()   # staging folders and pointer temp files of killed publishes
    superseded: tuple[str, ...] = ()   # versions older than the previous one (or never pointed at)
    flat_layout: tuple[str, ...] = ()  # entries of the legacy layout
    held: tuple[str, ...] = ()         # superseded versions kept because a reader holds them

    def __add__(self, other: "Cleanup") -> "Cleanup":
        return Cleanup(self.half_built + other.half_built, self.superseded + other.superseded,
                       self.flat_layout + other.flat_layout, self.held + other.held)


@dataclass(frozen=True)
class Published(Generic[T]):
    folder: Path                # the version now current
    previous: Path | None       # the version current before, kept
    built: T                    # what the build function returned
    cleanup: Cleanup


@dataclass(frozen=True)
class PublishedFolder:
    """The versions of one folder behind one pointer file; pointer and versions share a parent
    (the root), so every rename stays on one filesystem."""

    pointer: Path
    versions: Path
    legacy: tuple[str, ...] = ()   # glob patterns, relative to the root, of an earlier flat layout
    publisher: str = ""            # what to materialize to publish a version, for error messages
    lock: Path = field(init=False)

    def __post_init__(self):
        if self.pointer.parent != self.versions.parent:
            raise ValueError(f"{self.pointer} and {self.versions} must share a folder")
        object.__setattr__(self, "lock", self.pointer.with_name(f".{self.pointer.name}.lock"))

    @property
    def root(self) -> Path:
        return self.pointer.parent

    # -- readers ---------------------------------------------------------------------------

    def current_name(self) -> str | None:
        """The name the pointer holds, None when there is no pointer."""
        try:
            name = self.pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        _check_name(name, f"{self.pointer} holds")
        return name

    def current(self) -> Path:
        """The current version's folder: resolve once, then read everything from it."""
        name = self.current_name()
        if name is None:
            raise NotPublishedError(self._not_published())
        folder = self.versions / name
        if not folder.is_dir():
            raise NotPublishedError(f"{self.pointer} names {name!r}, but {folder} is missing; "
                                    f"{self._advice()}")
        return folder

    @contextmanager
    def reading(self) -> Iterator[Path]:
        """The current version's folder, kept whole until the block ends: a shared lock on its
        lease file, which a publish tests before it removes a version. Resolves again if the
        version went away between reading the pointer and taking the lock."""
        while True:
            folder = self.current()
            with open(self._lease(folder.name), "a") as handle:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
                if folder.is_dir():
                    yield folder
                    return

    def _lease(self, name: str) -> Path:
        return self.versions / f".{name}.lease"

    @contextmanager
    def _unless_read(self, name: str) -> Iterator[bool]:
        """Whether no reader holds version ``name`` (True: it may be removed while the block
        runs, an exclusive lock on its lease keeping new readers out until the lease is gone)."""
        lease = self._lease(name)
        if fcntl is None:
            yield True
            return
        # created if missing and unlinked only after the block, under the exclusive lock: a reader
        # that opens it meanwhile waits, then finds the version gone and resolves again
        with open(lease, "a") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                lease.unlink(missing_ok=True)

    def flat_layout(self) -> list[Path]:
        """The entries of the legacy layout still in the root."""
        return sorted({p for pattern in self.legacy for p in self.root.glob(pattern)})

    def _advice(self) -> str:
        return f"materialize {self.publisher} to publish one" if self.publisher else "publish one"

    def _not_published(self) -> str:
        flat = self.flat_layout()
        if flat:
            names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in flat)
            return (f"{self.root} still has the flat layout of an earlier version ({names}) and no "
                    f"pointer file {self.pointer.name}: {self._advice()} in the versioned layout "
                    f"(versions/<name>/ behind {self.pointer.name}; the flat files are then removed)")
        return f"nothing is published in {self.root} yet (no pointer file {self.pointer.name}): {self._advice()}"

    # -- the publisher ---------------------------------------------------------------------

    def publish(self, name: str, build: Callable[[Path], T]) -> Published[T]:
        """Build a version with ``build(folder)`` into a staging folder, move it to
        ``versions/<name>`` (a free variant of it) and point at it. A build that raises leaves
        nothing and changes nothing; the error propagates."""
        _check_name(name, "a version name")
        with self._locked():
            self.versions.mkdir(parents=True, exist_ok=True)
            cleanup = Cleanup(half_built=self._remove_half_built())
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}.", dir=self.versions))
            try:
                built = build(staging)
                _sync_tree(staging)
                target = self._free(name)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _sync_dir(self.versions)
            previous = self.current_name()
            self._point_at(target.name)
            cleanup += self.clean(keep={target.name, previous} - {None})
        kept = self.versions / previous if previous and previous != target.name else None
        return Published(target, kept if kept and kept.is_dir() else None, built, cleanup)

    def clean(self, keep: set[str]) -> Cleanup:
        """Remove every version folder but ``keep`` and those a reader holds (:meth:`reading`),
        the leases of versions that are gone, and the entries of the legacy layout (the caller
        holds the publish lock, or knows nobody publishes)."""
        superseded, held = [], []
        for entry in sorted(self.versions.iterdir()) if self.versions.is_dir() else []:
            if entry.name in keep or entry.name.startswith("."):  # staging folders and leases
                continue
            with self._unless_read(entry.name) as free:
                if free:
                    superseded.append(self._relative(entry))
                    _remove(entry)
                else:
                    held.append(self._relative(entry))
        for lease in self.versions.glob(".*.lease") if self.versions.is_dir() else []:
            name = lease.name[1:-len(".lease")]
            if not (self.versions / name).exists():
                with self._unless_read(name):
                    pass  # a lease nobody holds, of a version that is gone: removed
        flat = []
        for entry in self.flat_layout():
            flat.append(self._relative(entry))
            _remove(entry)
        return Cleanup(superseded=tuple(superseded), flat_layout=tuple(flat), held=tuple(held))

    def _remove_half_built(self) -> tuple[str, ...]:
        """Staging folders and pointer temp files: under the lock, all were left by killed publishes."""
        found = sorted([*self.versions.glob(f"{STAGING_PREFIX}*"), *self.root.glob(f".{self.pointer.name}.*.tmp")])
        names = tuple(self._relative(entry) for entry in found)
        for entry in found:
            _remove(entry)
        return names

    def _free(self, name: str) -> Path:
        target, n = self.versions / name, 1
        while target.exists():
            n += 1
            target = self.versions / f"{name}.{n}"
        return target

    def _point_at(self, name: str) -> None:
        tmp = self.root / f".{self.pointer.name}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.pointer)
        _sync_dir(self.root)

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() + ("/" if path.is_dir() else "")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_name(name: str, what: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name != name.strip():
        raise ValueError(f"{what} {name!r}: not a version folder name (non-empty, no leading dot, no slash)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _sync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames) to disk where the system allows opening folders."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _sync_tree(folder: Path) -> None:
    """Flush every file and folder of a built version before it can be pointed at."""
    for parent, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(parent, name), "rb") as handle:
                os.fsync(handle.fileno())
        _sync_dir(Path(parent))
