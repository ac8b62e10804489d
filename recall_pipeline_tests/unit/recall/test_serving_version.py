"""One serving version per publishing run: staged as links at plan time, current only once
published, untouched by later materializations, the previous version current after a failed
run, a killed switch finished by the next run, and a reader's version kept across publishes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recall_pipeline.core.recall import serving_version as sv


def staged_parts(root: Path, tag: str) -> sv.ServingParts:
    """Files and folders as the assets leave them: each holds ``tag``."""
    parts = sv.ServingParts(root / "models/ease/ease.npz", root / "models/text_cf/text_cf.npz",
                            root / "models/route_settings/route_settings.json",
                            root / "indexes/two_tower/versions/v1", root / "indexes/items")
    for path in (parts.ease, parts.text_cf, parts.route_settings):
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, tag)
    for folder in (parts.two_tower / "model", parts.lm_index):
        folder.mkdir(parents=True, exist_ok=True)
    replace_file(parts.two_tower / "model" / "weights", tag)
    replace_file(parts.two_tower / "items.faiss", tag)
    replace_file(parts.lm_index / "items.faiss", tag)
    return parts


def replace_file(path: Path, text: str) -> None:
    """As the assets write: a temporary file renamed onto the path."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def contents(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != sv.MANIFEST}


def test_staging_links_every_part_and_a_later_write_leaves_the_staged_copy(tmp_path):
    parts, layout = staged_parts(tmp_path, "run-1"), sv.ServingLayout(tmp_path / "serving")
    manifest = sv.stage(parts, layout.pending("run-1"), "run-1")
    assert set(manifest["parts"]) == {sv.EASE, sv.TEXT_CF, sv.ROUTE_SETTINGS, sv.TWO_TOWER, sv.LM_INDEX}
    assert manifest["parts"][sv.EASE]["source"] == str(parts.ease)
    assert os.stat(parts.ease).st_ino == os.stat(layout.pending("run-1") / sv.EASE).st_ino  # a link, no copy
    staged_parts(tmp_path, "run-2")  # a later run's assets replace every staged file
    assert set(contents(layout.pending("run-1")).values()) == {"run-1"}


def test_a_part_not_stored_is_left_out(tmp_path):
    parts = staged_parts(tmp_path, "a")
    parts.text_cf.unlink()
    manifest = sv.stage(parts, tmp_path / "pending", "a")
    assert sv.TEXT_CF not in manifest["parts"] and not (tmp_path / "pending" / sv.TEXT_CF).exists()


def test_published_version_is_current_and_a_failed_run_leaves_it(tmp_path):
    layout = sv.ServingLayout(tmp_path / "serving")
    assert layout.current_or_none() is None
    sv.stage(staged_parts(tmp_path, "good"), layout.pending("good"), "good")
    published = sv.publish(layout, "good")
    assert layout.current_or_none() == published.folder == layout.published.versions / "good"
    assert not layout.pending("good").exists()
    assert sv.read_manifest(published.folder)["run_id"] == "good"
    assert "published_at" in sv.read_manifest(published.folder)

    # a run whose checks fail stages but never publishes: the good version stays current
    sv.stage(staged_parts(tmp_path, "failed"), layout.pending("failed"), "failed")
    assert set(contents(layout.current_or_none()).values()) == {"good"}
    parts = sv.ServingParts.of_version(layout.current_or_none())
    assert parts.ease.read_text() == "good" and (parts.two_tower / "model" / "weights").read_text() == "good"
    assert sv.remove_pending(layout, sv.pending_runs(layout)) == [str(layout.pending("failed"))]
    assert sv.pending_runs(layout) == []


def test_feedback_parts_take_the_nightly_models_from_the_version(tmp_path):
    layout = sv.ServingLayout(tmp_path / "serving")
    sv.stage(staged_parts(tmp_path, "nightly"), layout.pending("nightly"), "nightly")
    version = sv.publish(layout, "nightly").folder
    staged = staged_parts(tmp_path, "later")  # e.g. a full refresh whose checks failed
    mixed = staged.with_nightly_models_of(version)
    assert (mixed.ease.read_text(), mixed.text_cf.read_text(), mixed.route_settings.read_text()) == ("nightly",) * 3
    assert (mixed.two_tower, mixed.lm_index) == (staged.two_tower, staged.lm_index)


def test_a_switch_killed_after_the_lists_were_published_is_finished_by_the_next_run(tmp_path):
    layout = sv.ServingLayout(tmp_path / "serving")
    sv.stage(staged_parts(tmp_path, "one"), layout.pending("one"), "one")
    sv.publish(layout, "one")
    sv.stage(staged_parts(tmp_path, "two"), layout.pending("two"), "two")
    # the warehouse published run two's lists, then its process died before the switch
    assert sv.finish_interrupted(layout, "one") is None  # the pointer already names the lists' run
    note = sv.finish_interrupted(layout, "two")
    assert note is not None and "run two" in note
    assert layout.published.current_name() == "two" and not layout.pending("two").exists()
    assert sv.finish_interrupted(layout, "two") is None


def test_publishing_without_a_staged_version_names_the_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run ghost"):
        sv.publish(sv.ServingLayout(tmp_path / "serving"), "ghost")


def test_a_reader_keeps_its_version_across_two_later_publishes(tmp_path):
    layout = sv.ServingLayout(tmp_path / "serving")
    for run in ("a", "b"):
        sv.stage(staged_parts(tmp_path, run), layout.pending(run), run)
        sv.publish(layout, run)
    with layout.published.reading() as held:
        for run in ("c", "d"):
            sv.stage(staged_parts(tmp_path, run), layout.pending(run), run)
            sv.publish(layout, run)
        assert held.name == "b" and set(contents(held).values()) == {"b"}
    sv.stage(staged_parts(tmp_path, "e"), layout.pending("e"), "e")
    cleanup = sv.publish(layout, "e").cleanup
    assert "versions/b/" in cleanup.superseded  # released: the next publish removes it
    assert sorted(p.name for p in layout.published.versions.iterdir() if not p.name.startswith(".")) == ["d", "e"]


def test_a_run_stages_after_cleaning_up_and_settles_once(tmp_path):
    """stage_for_run finishes a killed switch and removes what ended runs staged before it stages;
    a feedback refresh takes the current version's nightly models; settle publishes once (a
    retried merge changes nothing) and a failed run leaves the current version."""
    layout = sv.ServingLayout(tmp_path / "serving")
    first = sv.stage_for_run(layout, "r1", staged_parts(tmp_path, "one"), False, None, lambda run: True)
    assert first.cleaned == [] and "ease.npz: " in first.sources
    assert sv.settle(layout, "r1", True)[0] == "r1"
    assert sv.settle(layout, "r1", True) == ("r1", "serving version r1 is current already (a retried merge)")
    sv.stage(staged_parts(tmp_path, "two"), layout.pending("killed"), "killed")   # published lists, pointer not switched
    sv.stage(staged_parts(tmp_path, "three"), layout.pending("ended"), "ended")   # a run that ended unpublished
    sv.stage(staged_parts(tmp_path, "four"), layout.pending("live"), "live")     # a run still going
    own = staged_parts(tmp_path, "five")
    staged = sv.stage_for_run(layout, "r2", own, True, "killed", lambda run: run != "live")
    assert staged.cleaned[0].startswith("finished publishing the serving version of run killed")
    assert staged.cleaned[1:] == [f"removed {layout.pending('ended')}: staged by a run that ended without publishing"]
    assert sv.pending_runs(layout) == ["live", "r2"] and layout.published.current_name() == "killed"
    assert staged.parts.ease.read_text() == "two" and staged.parts.lm_index.joinpath("items.faiss").read_text() == "five"
    current, message = sv.settle(layout, "r2", False)
    assert current == "killed" and message.startswith("a check failed: nothing was published; serving version killed")
    assert sv.pending_runs(layout) == ["live"]
