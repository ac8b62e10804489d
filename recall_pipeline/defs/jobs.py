"""Jobs: the full refresh (every asset) and the feedback refresh (what new feedback changes)."""

import dagster as dg

from recall_pipeline.settings import FEEDBACK_EVALUATION_ENV, RETRAIN_ENV, env

# A feedback refresh retrains the recall model only when training has grown by $RETRAIN_ENV
# interactions since the champion was trained; the nightly full refresh always retrains.
# It publishes the new lists without re-evaluating ("defer", the default: the nightly full
# refresh evaluates, and the published copy keeps the last evaluation's figures) or evaluates
# them first ("run": re-tunes every baseline, 20 s or more on the bundled data).
EVALUATION_CHOICES = ("defer", "run")
FEEDBACK_JOB = "feedback_refresh_job"

recall_job = dg.define_asset_job(
    "recall_job",
    selection=dg.AssetSelection.all(),
    description="Full refresh: ingest (and any waiting feedback), clean, split, encode, profile, "
                "index, recall (every user), evaluate, publish.",
)


def feedback_evaluation(value: str | None = None) -> str:
    """``value``, else ``$RECALL_PIPELINE_FEEDBACK_EVALUATION``, else ``defer``; checked."""
    value = value or env(FEEDBACK_EVALUATION_ENV)
    if value not in EVALUATION_CHOICES:
        raise ValueError(f"{FEEDBACK_EVALUATION_ENV} must be one of {EVALUATION_CHOICES}, not {value!r}")
    return value


def feedback_refresh_job(evaluation: str | None = None):
    """The feedback refresh: what depends on new feedback, with or without the evaluation."""
    evaluation = feedback_evaluation(evaluation)
    # the TextCF and EASE models and the fusion are chosen nightly: a feedback refresh reuses them
    selection = (dg.AssetSelection.assets("feedback_events").downstream()
                 - dg.AssetSelection.assets("text_cf_model", "ease_model", "route_settings"))
    if evaluation == "defer":
        selection = selection - dg.AssetSelection.assets("evaluation_report")
    return dg.define_asset_job(
        FEEDBACK_JOB,
        selection=selection,
        tags={"evaluation": evaluation},
        description="Append new feedback and refresh only what depends on it: cleaning, split, the "
                    "profiles and recall lists of the users whose history changed (everyone else's "
                    "are copied from the published run), and the published copy; item embeddings, "
                    "the LM index and the last full refresh's EASE and TextCF models and fusion are reused, the recall "
                    "model is retrained only past the configured threshold of new training "
                    f"interactions; evaluation: {evaluation} ({FEEDBACK_EVALUATION_ENV}).",
    )


def feedback_run_config(files: list[str]) -> dict:
    """Run config of a feedback refresh for the given inbox files."""
    threshold = int(env(RETRAIN_ENV))
    return {"ops": {"feedback_events": {"config": {"files": files}},
                    "recall_model": {"config": {"retrain_min_new_interactions": threshold}}}}
