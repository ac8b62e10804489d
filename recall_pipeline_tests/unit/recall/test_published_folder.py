"""Versions behind one pointer file: the switch is atomic, a killed build is
cleaned up and never pointed at, the previous version is kept, an earlier flat layout goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recall_pipeline.core.recall.published_folder import NotPublishedError, PublishedFolder
from recall_pipeline.settings import HomeLayout

ROOT = Path(__file__).resolve().parents[3]
FLAT = ("model", "items.faiss", "manifest.json", ".model-*", ".items.faiss.*.tmp", ".manifest.json.*.tmp")


def folder_at(root: Path) -> PublishedFolder:
    return PublishedFolder(root / "CURRENT", root / "versions", legacy=FLAT, publisher="two_tower_index")


def pair(name: str, pause: float = 0.0):
    """A build writing a 'model' and an 'index' that belong together (both hold the name),
    slowly enough for a reader to look at the folder in between."""
    def build(folder: Path) -> str:
        (folder / "model").mkdir()
        (folder / "model" / "weights").write_text(name)
        time.sleep(pause)
        (folder / "items.faiss").write_text(name)
        return name
    return build


def test_publish_points_at_a_whole_version(tmp_path):
    published = folder_at(tmp_path)
    first = published.publish("v1-a", pair("v1-a"))
    assert first.folder == tmp_path / "versions" / "v1-a" and first.previous is None and first.built == "v1-a"
    assert (tmp_path / "CURRENT").read_text() == "v1-a\n"
    assert published.current() == first.folder and (first.folder / "items.faiss").read_text() == "v1-a"
    second = published.publish("v2-b", pair("v2-b"))
    assert published.current() == second.folder and second.previous == first.folder
    # nothing but the pointer, its lock and the two versions: no staging, no temp files
    assert sorted(p.name for p in tmp_path.iterdir()) == [".CURRENT.lock", "CURRENT", "versions"]
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v1-a", "v2-b"]


def test_the_previous_version_is_kept_older_ones_are_removed(tmp_path):
    published = folder_at(tmp_path)
    for name in ("v1-a", "v1-b", "v2-c"):
        result = published.publish(name, pair(name))
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v1-b", "v2-c"]
    assert result.cleanup.superseded == ("versions/v1-a/",) and not result.cleanup.half_built
    # the same name again (a retried step) never overwrites the version in use
    again = published.publish("v2-c", pair("v2-c again"))
    assert again.folder.name == "v2-c.2" and (published.current() / "items.faiss").read_text() == "v2-c again"
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v2-c", "v2-c.2"]


def test_a_failed_build_changes_nothing(tmp_path):
    published = folder_at(tmp_path)
    published.publish("v1-a", pair("v1-a"))

    def broken(folder: Path):
        (folder / "model").mkdir()
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        published.publish("v2-b", broken)
    assert published.current() == tmp_path / "versions" / "v1-a"
    assert [p.name for p in (tmp_path / "versions").iterdir()] == ["v1-a"]


KILLED = r"""
import sys, time
from pathlib import Path
from recall_pipeline.core.recall.published_folder import PublishedFolder

root = Path(sys.argv[1])
def build(folder):
    (folder / "model").mkdir()
    (folder / "model" / "weights").write_text("half")
    print("building", flush=True)
    time.sleep(600)  # killed here: the index is never written
PublishedFolder(root / "CURRENT", root / "versions").publish("v3-killed", build)
"""


def test_a_killed_build_is_never_pointed_at_and_the_next_publish_removes_it(tmp_path):
    published = folder_at(tmp_path)
    published.publish("v1-a", pair("v1-a"))
    published.publish("v2-b", pair("v2-b"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "building"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    [staging] = [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".staging-v3-killed.")]
    assert (staging / "model" / "weights").exists() and not (staging / "items.faiss").exists()
    assert published.current() == tmp_path / "versions" / "v2-b"  # the killed run changed nothing
    (tmp_path / ".CURRENT.12345.tmp").write_text("v3-killed\n")  # a pointer killed before its rename
    result = published.publish("v4-d", pair("v4-d"))  # the lock of the killed process is gone
    assert result.cleanup.half_built == (".CURRENT.12345.tmp", f"versions/{staging.name}/")
    assert result.cleanup.superseded == ("versions/v1-a/",)
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v2-b", "v4-d"]
    assert published.current().name == "v4-d"


READER = r"""
import json, os, sys
from pathlib import Path
from recall_pipeline.core.recall.published_folder import PublishedFolder, NotPublishedError

root, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
published = PublishedFolder(root / "CURRENT", root / "versions")
reads, seen, torn, no_pointer, superseded = 0, set(), [], 0, 0
while not stop.exists():
    try:
        folder = published.current()
    except NotPublishedError:
        no_pointer += 1
        continue
    try:
        model, index = (folder / "model" / "weights").read_text(), (folder / "items.faiss").read_text()
    except FileNotFoundError:
        # legitimate only when the folder went away whole, two publishes later
        now = int(published.current_name()[1:])
        if folder.exists() or now < int(folder.name[1:]) + 2:
            torn.append(folder.name)
        else:
            superseded += 1
        continue
    if model != folder.name or index != folder.name:
        torn.append(folder.name)
    reads += 1
    if reads == 1:
        (root / "reader-ready").touch()
    seen.add(folder.name)
out.write_text(json.dumps({"reads": reads, "seen": len(seen), "torn": torn, "no_pointer": no_pointer,
                           "superseded": superseded}))
"""


def test_a_reader_never_sees_a_half_switched_version(tmp_path):
    """A reader process resolves the pointer in a loop while 40 versions are published: every
    folder it resolves holds a model and an index of the same version, and the pointer is
    never missing."""
    published = folder_at(tmp_path)
    published.publish("v0000", pair("v0000"))
    stop, out = tmp_path / "stop", tmp_path / "reader.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(tmp_path), str(stop), str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "reader-ready").exists():  # the reader has started reading
            assert reader.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for n in range(1, 41):
            published.publish(f"v{n:04d}", pair(f"v{n:04d}", pause=0.01))
    finally:
        stop.touch()
        assert reader.wait(timeout=60) == 0
    result = json.loads(out.read_text())
    assert result["torn"] == [] and result["no_pointer"] == 0
    assert result["reads"] > 100 and result["seen"] > 5, result


def test_a_flat_layout_is_refused_by_readers_and_removed_by_the_next_publish(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_text("old")
    for name in ("items.faiss", "manifest.json"):
        (tmp_path / name).write_text("old")
    (tmp_path / ".model-old").mkdir()
    published = folder_at(tmp_path)
    with pytest.raises(NotPublishedError) as refused:
        published.current()
    assert str(refused.value) == (
        f"{tmp_path} still has the flat layout of an earlier version (.model-old/, items.faiss, "
        "manifest.json, model/) and no pointer file CURRENT: materialize two_tower_index to publish one "
        "in the versioned layout (versions/<name>/ behind CURRENT; the flat files are then removed)")
    result = published.publish("v1-a", pair("v1-a"))
    assert result.cleanup.flat_layout == (".model-old/", "items.faiss", "manifest.json", "model/")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".CURRENT.lock", "CURRENT", "versions"]
    assert published.publish("v1-b", pair("v1-b")).cleanup.flat_layout == ()


def test_readers_are_told_what_to_materialize(tmp_path):
    published = folder_at(tmp_path)
    with pytest.raises(NotPublishedError, match=r"nothing is published in .* yet \(no pointer file CURRENT\): "
                                                r"materialize two_tower_index to publish one"):
        published.current()
    (tmp_path / "CURRENT").write_text("v9-gone\n")
    with pytest.raises(NotPublishedError, match=r"CURRENT names 'v9-gone', but .*v9-gone is missing; materialize"):
        published.current()
    for bad in ("", ".staging-x", "../x", "a/b"):
        with pytest.raises(ValueError, match="not a version folder name"):
            published.publish(bad, pair(bad))


def test_the_home_layout_names_the_root_and_the_pointer(tmp_path):
    home = HomeLayout(tmp_path)
    serving = home.two_tower_serving
    assert serving.root == home.two_tower_index == tmp_path / "indexes" / "two_tower"
    assert serving.pointer == home.two_tower_pointer and serving.versions == home.two_tower_versions
    assert serving.legacy == home.two_tower_flat_layout == FLAT and serving.publisher == "two_tower_index"


HOLDING_READER = r"""
import sys, time
from pathlib import Path
from recall_pipeline.core.recall.published_folder import PublishedFolder

root, release = Path(sys.argv[1]), Path(sys.argv[2])
with PublishedFolder(root / "CURRENT", root / "versions").reading() as folder:
    print(folder.name, flush=True)
    while not release.exists():
        time.sleep(0.02)
    print((folder / "model" / "weights").read_text(), (folder / "items.faiss").read_text(), flush=True)
"""


def test_a_reader_keeps_its_version_across_publishes_until_it_lets_go(tmp_path):
    """A reader in another process holds v1 through three publishes: v1 stays whole while others
    come and go, and it reads v1's files at the end; after it lets go, the next publish removes
    v1 and its lease."""
    published = folder_at(tmp_path)
    published.publish("v1-a", pair("v1-a"))
    release = tmp_path / "release"
    reader = subprocess.Popen([sys.executable, "-c", HOLDING_READER, str(tmp_path), str(release)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "v1-a"
        cleanups = [published.publish(name, pair(name)).cleanup for name in ("v2-b", "v3-c", "v4-d")]
        assert [c.held for c in cleanups] == [(), ("versions/v1-a/",), ("versions/v1-a/",)]
        assert cleanups[2].superseded == ("versions/v2-b/",)
        assert sorted(p.name for p in (tmp_path / "versions").iterdir() if not p.name.startswith(".")) == \
            ["v1-a", "v3-c", "v4-d"]
        release.touch()
        assert reader.stdout.readline().split() == ["v1-a", "v1-a"]  # its model and index, whole
        assert reader.wait(timeout=30) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
    after = published.publish("v5-e", pair("v5-e")).cleanup
    assert after.superseded == ("versions/v1-a/", "versions/v3-c/") and after.held == ()
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ["v4-d", "v5-e"]  # no lease left


def test_a_reader_that_died_holds_nothing(tmp_path):
    published = folder_at(tmp_path)
    published.publish("v1-a", pair("v1-a"))
    release = tmp_path / "release"
    reader = subprocess.Popen([sys.executable, "-c", HOLDING_READER, str(tmp_path), str(release)],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "v1-a"
    reader.send_signal(signal.SIGKILL)
    reader.wait(timeout=30)
    published.publish("v2-b", pair("v2-b"))
    assert published.publish("v3-c", pair("v3-c")).cleanup.superseded == ("versions/v1-a/",)
