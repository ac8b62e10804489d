"""The code location loads, with every asset, check and job in place."""

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from recall_pipeline.definitions import build_definitions, defs
from recall_pipeline.settings import HomeLayout

ASSETS = {"raw_interactions", "raw_items", "feedback_events", "cleaned_item_text", "cleaned_interactions",
          "rating_matrix", "item_embeddings", "user_profiles", "recall_model", "text_cf_model", "ease_model", "faiss_index",
          "two_tower_index", "route_settings", "recall_candidates", "evaluation_report", "published_warehouse"}
OBSERVED = {"run_failures"}  # written by a sensor, not by a run: shown in the graph, in no job


def test_graph_has_every_asset_group_and_check(tmp_path):
    definitions = build_definitions(HomeLayout(tmp_path))
    graph = definitions.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == ASSETS | OBSERVED
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups["raw_items"] == "ingest" and groups["faiss_index"] == "recall"
    assert groups["ease_model"] == groups["text_cf_model"] == "training"
    assert groups["run_failures"] == "operations" and not graph.get(dg.AssetKey("run_failures")).is_executable
    checks = {key.name for key in graph.asset_check_keys}
    assert {"raw_rows_reconcile", "every_user_has_candidates", "no_training_item_recalled",
            "ease_model_fits_catalogue"} <= checks
    # recall_candidates reads the EASE model the graph shows, not one it solves on the side
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("recall_candidates")).parent_keys}
    assert {"ease_model", "route_settings"} <= parents
    # the EASE model is fitted with the variant the run's fusion chose
    assert "route_settings" in {k.to_user_string() for k in graph.get(dg.AssetKey("ease_model")).parent_keys}
    recall_job = definitions.resolve_job_def("recall_job")
    assert {key.to_user_string() for key in recall_job.asset_layer.selected_asset_keys} == ASSETS
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"{key} has no description"
        assert graph.get(key).owners == ["team:recall"]


def test_lineage_runs_from_raw_to_report(tmp_path):
    graph = build_definitions(HomeLayout(tmp_path)).resolve_asset_graph()
    upstream = {k.to_user_string() for k in graph.get_ancestor_asset_keys(dg.AssetKey("evaluation_report"))}
    assert upstream == ASSETS - {"evaluation_report", "published_warehouse"}


def test_jobs_schedule_and_sensor(tmp_path):
    definitions = build_definitions(HomeLayout(tmp_path))
    feedback_job = definitions.resolve_job_def("feedback_refresh_job")
    selected = {key.to_user_string() for key in feedback_job.asset_layer.selected_asset_keys}
    # new feedback refreshes what depends on interactions, and reuses embeddings, the LM index and
    # the TextCF and EASE models and the fusion (the recall model retrains only past its threshold of new data); the evaluation is deferred
    # to the nightly full refresh unless configured to run
    assert selected == {"feedback_events", "cleaned_interactions", "rating_matrix", "user_profiles",
                        "recall_model", "two_tower_index", "recall_candidates", "published_warehouse"}
    evaluating = build_definitions(HomeLayout(tmp_path), feedback_evaluation="run").resolve_job_def(
        "feedback_refresh_job")
    assert {key.to_user_string() for key in evaluating.asset_layer.selected_asset_keys} == selected | {
        "evaluation_report"}
    with pytest.raises(ValueError, match="RECALL_PIPELINE_FEEDBACK_EVALUATION"):
        build_definitions(HomeLayout(tmp_path), feedback_evaluation="sometimes")
    schedule = definitions.resolve_schedule_def("nightly_refresh")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == ("0 2 * * *", "UTC", "recall_job")
    assert definitions.resolve_sensor_def("feedback_inbox_sensor").job_name == "feedback_refresh_job"


def test_workspace_loads_with_dagster_tooling():
    assert isinstance(defs(), dg.Definitions)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stdout + out.stderr


def test_cli_training_budget_is_valid_run_config(tmp_path):
    """``recall-pipeline run --max-train-seconds`` configures recall_model through the job's schema."""
    from recall_pipeline.cli import run_config

    job = build_definitions(HomeLayout(tmp_path)).resolve_job_def("recall_job")
    resolved = dg.validate_run_config(job, run_config(600.0))
    assert resolved["ops"]["recall_model"]["config"]["max_train_seconds"] == 600.0
    assert dg.validate_run_config(job, run_config(None))["ops"]["recall_model"]["config"]["max_train_seconds"] == 0.0
    # --accept-drop lets the quality gate pass a drop
    assert dg.validate_run_config(job, run_config(None, True))["ops"]["route_settings"]["config"]["accept_drop"] is True
    assert dg.validate_run_config(job, run_config(None))["ops"]["route_settings"]["config"]["accept_drop"] is False


# The one module that defines two assets (they are loaded together, from the same files).
MULTI_ASSET_MODULES = {"raw_interactions": "raw_interactions_and_items", "raw_items": "raw_interactions_and_items"}


def test_each_asset_is_found_from_its_name(tmp_path):
    """Its code at recall_pipeline/defs/<group>/<asset>.py, a row of the architecture page's asset
    table, and its run configuration (if any) in the generated reference under that module."""
    root = Path(__file__).resolve().parents[2]
    graph = build_definitions(HomeLayout(tmp_path)).resolve_asset_graph()
    architecture = (root / "docs" / "architecture.md").read_text()
    reference = (root / "docs" / "reference" / "configuration.md").read_text()
    for key in graph.get_all_asset_keys():
        name, group = key.to_user_string(), graph.get(key).group_name
        module = root / "recall_pipeline" / "defs" / group / f"{MULTI_ASSET_MODULES.get(name, name)}.py"
        assert module.exists(), f"{name}: no {module.relative_to(root)}"
        assert re.search(rf"^\|[^|]*`{name}`[^|]*\|", architecture, re.M), f"{name} is not in docs/architecture.md's asset table"
        if "(dg.Config)" in module.read_text() or "config_from(" in module.read_text():
            assert f"`recall_pipeline/defs/{group}/{module.name}`" in reference, f"{name}'s config is not in the reference"
