"""One serving version per publishing run: the models the published lists were computed with,
made current together with the lists, only once the run's blocking checks pass.

A recall run reads its models from one :class:`ServingParts` (the EASE model with the item
counts of its fit, the TextCF model, the route settings, the two-tower version with its index,
the LM index). In its plan step it hard-links exactly those files into a pending folder of its
own (``serving/pending/<run>/``): a later materialization replaces the staged files by rename,
which leaves the linked copies as they were. When the run's checks pass and its lists are
published, the pending folder becomes ``serving/versions/<run>/`` behind the pointer
``serving/CURRENT`` (:class:`PublishedFolder`: one rename, readers' leases, the previous version
kept). A run whose checks fail publishes nothing: the previous version stays current.

Who reads what:

- a full refresh serves what its own assets just wrote (:meth:`ServingParts.staged`);
- a feedback refresh reuses the current version's EASE model (and its item counts), TextCF and
  route settings, and the two-tower version and LM index its own run published;
- ad-hoc recall and the evaluation's per-route figures read the current version, so they use
  the models the published lists used, never one a failed run left behind.

The warehouse publishes the lists first, then the pointer switches; a run killed in between
leaves its pending folder, and the next recall run finishes the switch
(:func:`finish_interrupted`), so the version always names the lists' run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from recall_pipeline.core.recall.published_folder import Published, PublishedFolder

EASE, TEXT_CF, ROUTE_SETTINGS = "ease.npz", "text_cf.npz", "route_settings.json"
TWO_TOWER, LM_INDEX = "two_tower", "lm_index"
MANIFEST = "manifest.json"
FILES = (EASE, TEXT_CF, ROUTE_SETTINGS)
FOLDERS = (TWO_TOWER, LM_INDEX)


@dataclass(frozen=True)
class ServingParts:
    """Where a recall run reads each model (a file or folder that does not exist: not stored)."""

    ease: Path
    text_cf: Path
    route_settings: Path
    two_tower: Path   # a published two-tower version: model/, items.faiss, manifest.json
    lm_index: Path    # the LM index folder: items.faiss, manifest.json

    @classmethod
    def of_version(cls, folder: Path) -> "ServingParts":
        """The parts of one serving version (or of a pending one)."""
        return cls(folder / EASE, folder / TEXT_CF, folder / ROUTE_SETTINGS, folder / TWO_TOWER, folder / LM_INDEX)

    def with_nightly_models_of(self, version: Path) -> "ServingParts":
        """These parts with the EASE model, TextCF and route settings of ``version``: what a
        feedback refresh serves (the models a full refresh chooses, kept until the next one)."""
        served = ServingParts.of_version(version)
        return ServingParts(served.ease, served.text_cf, served.route_settings, self.two_tower, self.lm_index)

    def named(self) -> dict[str, Path]:
        return {EASE: self.ease, TEXT_CF: self.text_cf, ROUTE_SETTINGS: self.route_settings,
                TWO_TOWER: self.two_tower, LM_INDEX: self.lm_index}


@dataclass(frozen=True)
class ServingLayout:
    """``serving/`` in the home: ``CURRENT``, ``versions/<run>/`` and ``pending/<run>/``."""

    root: Path

    @property
    def published(self) -> PublishedFolder:
        return PublishedFolder(self.root / "CURRENT", self.root / "versions", publisher="recall_candidates")

    @property
    def pending_root(self) -> Path:
        return self.root / "pending"

    def pending(self, run_id: str) -> Path:
        return self.pending_root / run_id

    def current_or_none(self) -> Path | None:
        """The current version's folder, None before the first publication."""
        return self.published.current() if self.published.current_name() is not None else None


def stage(parts: ServingParts, target: Path, run_id: str) -> dict:
    """Link (copy where links are refused) every part that exists into ``target`` and write its
    manifest: the run, each part's source and checksum. An existing ``target`` (a retried plan
    step) is replaced."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    entries = {}
    for name, source in parts.named().items():
        if source.is_dir():
            _link_tree(source, target / name)
        elif source.is_file():
            _link(source, target / name)
        else:
            continue
        entries[name] = {"source": str(source), "sha256": _digest(target / name)}
    manifest = {"run_id": run_id, "staged_at": datetime.now(timezone.utc).isoformat(), "parts": entries}
    _write_json(target / MANIFEST, manifest)
    return manifest


def record_part(folder: Path, name: str, source: str) -> None:
    """Add a part written into a staged ``folder`` after :func:`stage` (e.g. a model the run
    fitted itself) to its manifest."""
    manifest = read_manifest(folder)
    manifest["parts"][name] = {"source": source, "sha256": _digest(folder / name)}
    _write_json(folder / MANIFEST, manifest)


def publish(layout: ServingLayout, run_id: str) -> Published[dict]:
    """Make run ``run_id``'s pending folder the current version (its lists are published)."""
    pending = layout.pending(run_id)
    if not (pending / MANIFEST).is_file():
        raise FileNotFoundError(f"{pending}: no staged serving version of run {run_id} (its plan step stages one)")

    def build(folder: Path) -> dict:
        for entry in pending.iterdir():
            entry.rename(folder / entry.name)
        manifest = read_manifest(folder)
        manifest["published_at"] = datetime.now(timezone.utc).isoformat()
        _write_json(folder / MANIFEST, manifest)
        return manifest

    published = layout.published.publish(run_id, build)
    shutil.rmtree(pending, ignore_errors=True)
    return published


def finish_interrupted(layout: ServingLayout, published_run: str | None) -> str | None:
    """If the run whose lists the warehouse publishes was killed between publishing them and
    switching the pointer, switch it now; returns what was done (None: nothing to do)."""
    if published_run is None or layout.published.current_name() == published_run:
        return None
    if not (layout.pending(published_run) / MANIFEST).is_file():
        return None
    publish(layout, published_run)
    return (f"finished publishing the serving version of run {published_run} (its lists were published, "
            f"its run stopped before the pointer switched)")


def remove_pending(layout: ServingLayout, runs: list[str]) -> list[str]:
    """Remove the pending folders of these runs (ended without publishing); returns their paths."""
    removed = []
    for run in runs:
        folder = layout.pending(run)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def pending_runs(layout: ServingLayout) -> list[str]:
    return sorted(p.name for p in layout.pending_root.iterdir()) if layout.pending_root.is_dir() else []


@dataclass(frozen=True)
class Staged:
    """A recall run's staged version: its parts, what was cleaned up first, where each part came from."""

    parts: ServingParts
    cleaned: list[str]
    sources: str


def stage_for_run(layout: ServingLayout, run_id: str, own: ServingParts, feedback: bool,
                  published_run: str | None, ended: Callable[[str], bool]) -> Staged:
    """What a recall run's plan step does before it reads a model: finish a switch a killed run
    left half done (``published_run``: the run whose lists the warehouse publishes), remove the
    pending folders of other runs that ``ended`` without publishing, then stage this run's parts:
    ``own`` (what its assets wrote), or for a ``feedback`` refresh the current version's EASE,
    TextCF and route settings with its own two-tower and LM indexes."""
    cleaned = [note for note in [finish_interrupted(layout, published_run)] if note]
    stale = [run for run in pending_runs(layout) if run != run_id and ended(run)]
    cleaned += [f"removed {folder}: staged by a run that ended without publishing"
                for folder in remove_pending(layout, stale)]
    current = layout.current_or_none()
    parts = own.with_nightly_models_of(current) if feedback and current is not None else own
    manifest = stage(parts, layout.pending(run_id), run_id)
    sources = ", ".join(f"{name}: {part['source']}" for name, part in manifest["parts"].items())
    return Staged(ServingParts.of_version(layout.pending(run_id)), cleaned, sources)


def settle(layout: ServingLayout, run_id: str, lists_published: bool) -> tuple[str, str]:
    """After the run's checks: publish its staged version with its lists (once: a retried merge
    finds it current), or drop it and keep the current one. Returns (the version that serves
    now, what happened)."""
    if lists_published and layout.published.current_name() == run_id:
        return run_id, f"serving version {run_id} is current already (a retried merge)"
    if lists_published:
        version = publish(layout, run_id)
        return version.folder.name, f"serving version {version.folder} is current (previous: {version.previous or 'none'})"
    remove_pending(layout, [run_id])
    current = layout.published.current_name() or "none"
    return current, (f"a check failed: nothing was published; serving version {current} stays current, "
                     "with the lists it was published with")


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links refused: a copy keeps the snapshot too
        shutil.copy2(source, target)


def _link_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=lambda s, t: _link(Path(s), Path(t)),
                    ignore=shutil.ignore_patterns(".*"))


def _digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(path.parent).as_posix().encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)
