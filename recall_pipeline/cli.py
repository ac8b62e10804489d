"""``recall-pipeline``: run the whole graph, or look at a user's recall list.

    recall-pipeline run [--source source.yaml] [--sample-users N] [--max-train-seconds S] [--accept-drop]
    recall-pipeline recall USER_ID [-k 20]
    recall-pipeline recall --items 1,260,1196 [-k 20] [--model-version served]
    recall-pipeline sql "select ... from recall.latest ..."
    recall-pipeline init-home
    recall-pipeline generate --size M --out data/m [--seed 0] [--users N --items N --interactions N]

``run`` executes the ``recall_job`` through Dagster against the instance in
``$DAGSTER_HOME`` (default ``$RECALL_PIPELINE_HOME/dagster``), so the run, its logs and its
asset materializations show up in the Dagster UI opened by ``make dev``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from recall_pipeline.settings import SOURCE_ENV, HomeLayout, home_layout, slot_wait_seconds

TRY_SQL = ("select c.rank, c.item_id, i.item_text, round(c.score, 3) as score "
           "from recall.latest c join clean.items i using (item_id) "
           "where c.user_id = {user} order by c.rank limit 10;")


SERVED = "served"  # ad-hoc recall's default model version: the serving version's two-tower model
LOG_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _prepare_environment(layout: HomeLayout) -> None:
    os.environ.setdefault("DAGSTER_HOME", str(layout.dagster_home))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_config(max_train_seconds: float | None, accept_drop: bool = False) -> dict:
    """The run config of ``run``: INFO logs, the training budget when one is given, and whether
    the quality gate lets a drop of the lists' validation figure through."""
    ops = {}
    if max_train_seconds is not None:
        ops["recall_model"] = {"config": {"max_train_seconds": max_train_seconds}}
    if accept_drop:
        ops["route_settings"] = {"config": {"accept_drop": True}}
    return {**LOG_INFO, "ops": ops} if ops else LOG_INFO


def run(source: str | None, sample_users: int | None, max_train_seconds: float | None = None,
        accept_drop: bool = False) -> int:
    """Materialize every asset on the configured source and print where the outputs are.

    Runs whose process is gone are recovered first; the run itself gives up waiting for a pool
    slot after ``RECALL_PIPELINE_SLOT_WAIT_SECONDS`` and stops cleanly on SIGTERM or Ctrl-C
    (:mod:`recall_pipeline.runtime.guarded_run`). A failed run ends with its failing step, the error's
    own message and what to do next. ``max_train_seconds`` bounds the recall model's training
    (a large source: without it, early stopping decides how long it trains).
    """
    layout = home_layout().create()
    _prepare_environment(layout)
    if source:
        os.environ[SOURCE_ENV] = os.path.abspath(source)
    try:
        wait_limit = slot_wait_seconds()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    import dagster as dg

    from recall_pipeline.runtime import guarded_run
    from recall_pipeline.definitions import build_definitions
    from recall_pipeline.resources import data_source_from_env

    data_source = data_source_from_env()
    if sample_users:
        # Dagster reads a resource's config from its constructor arguments: build a new one.
        data_source = type(data_source)(**{**data_source.model_dump(), "sample_users": sample_users})
    job = build_definitions(layout, data_source).resolve_job_def("recall_job")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        guarded = guarded_run.execute(job, instance, run_config(max_train_seconds, accept_drop), wait_limit)
        steps = instance.get_run_step_stats(guarded.run_id)
        dagster_run = instance.get_run_by_id(guarded.run_id)
        status = dagster_run.status.value if dagster_run else "NOT STARTED"
        failure = [] if guarded.success else guarded_run.failure_lines(instance, guarded)
    elapsed = time.perf_counter() - started
    print(f"\nrun {guarded.run_id}: {status} in {elapsed:.1f}s")
    for step in sorted(steps, key=lambda s: s.start_time or 0):
        if step.start_time and step.end_time:
            print(f"  {step.step_key:<44} {step.end_time - step.start_time:7.1f}s  {step.status.value}")
    if failure:
        sys.stdout.flush()  # the failure lines must come last, after the step table
        for line in failure:
            print(line, file=sys.stderr)
        return 128 + guarded.stop.signum if guarded.stop and guarded.stop.signum else 1
    _print_outputs(layout, guarded.run_id)
    return 0


def _print_outputs(layout: HomeLayout, run_id: str) -> None:
    import polars as pl

    from recall_pipeline.core.evaluation.report_html import SLICE_ORDER, metrics_table

    with duckdb.connect(str(layout.warehouse), read_only=True) as con:
        rows = con.sql("select model, slice, metric, k, value from eval.metrics where run_id = ?",
                       params=[run_id]).pl().to_dicts()
        user = con.execute("select min(user_id) from recall.latest").fetchall()[0][0]
    print("\nevaluation (docs/EVALUATION.md), same split, same run:")
    with pl.Config(tbl_rows=20, tbl_cols=-1, tbl_width_chars=200, tbl_hide_column_data_types=True,
                   tbl_hide_dataframe_shape=True, float_precision=4):
        for slice_name in SLICE_ORDER:
            table = metrics_table(rows, slice_name)
            if not table.is_empty():
                print(f"{slice_name} slice\n{table}")
    print(f"\nhome folder:       {layout.root}")
    print(f"DuckDB warehouse:  {layout.warehouse}")
    print(f"published copy:    {layout.published} (open read-only while the pipeline runs)")
    print(f"FAISS index:       {layout.item_index}")
    print(f"evaluation report: {layout.latest_report}")
    print(f"MLflow store:      {layout.mlflow_db}")
    print(f"Dagster instance:  {os.environ['DAGSTER_HOME']} (open the UI with: make dev)")
    literal = user if isinstance(user, int) else "'" + str(user).replace("'", "''") + "'"
    print(f"\ntry:  .venv/bin/recall-pipeline sql \"{TRY_SQL.format(user=literal)}\"")
    print(f"or:   .venv/bin/recall-pipeline recall {user}")
    print(f"or open {layout.published} read-only from any DuckDB client and run the same SQL "
          "with catalog.items in place of clean.items")


def recall(user_id: str, k: int) -> int:
    """Print a user's newest recall list with item text and every route that proposed each item
    at its rank (``ease#3,two_tower#4``), read-only."""
    from recall_pipeline.core.recall.routes import ROUTES

    layout = home_layout()
    if not layout.warehouse.exists():
        print(f"no warehouse at {layout.warehouse}; run `make run` first", file=sys.stderr)
        return 1
    try:
        with duckdb.connect(str(layout.warehouse), read_only=True) as con:
            # compare as text: works for integer and text ids alike, "42" included
            rows = con.execute(
                "select c.rank, c.item_id, i.item_text, c.score, "
                + ", ".join(f"c.rank_{name}" for name in ROUTES) + " from recall.latest c "
                "join clean.items i using (item_id) where c.user_id::varchar = ? order by c.rank limit ?",
                [user_id, k]).fetchall()
    except duckdb.IOException as exc:
        print(f"the warehouse is busy (a run is writing it): {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"{layout.warehouse}: {exc}", file=sys.stderr)
        return 1
    if not rows:
        print(f"user {user_id} has no recall list in {layout.warehouse}", file=sys.stderr)
        return 1
    for rank, item_id, text, score, *ranks in rows:
        routes = ",".join(f"{name}#{at}" for name, at in zip(ROUTES, ranks) if at)
        print(f"{rank:>3}  {score:6.3f}  {str(item_id):>8}  {text}  [{routes}]")
    return 0


def recall_items(items: str, k: int, model_version: str) -> int:
    """Recall for a new user given as a list of item ids, with the models the published lists
    used (the serving version; another registered two-tower version by ``model_version``), with
    each item's routes."""
    layout = home_layout()
    _prepare_environment(layout)
    from recall_pipeline.core.recall import adhoc

    try:
        with duckdb.connect(str(layout.warehouse), read_only=True) as con:
            catalogue = con.sql("select e.item_id, e.model, e.embedding, i.item_text from features.item_embeddings e "
                                "join clean.items i using (item_id) order by e.item_id").pl()
    except duckdb.Error as exc:
        print(f"{layout.warehouse}: {exc}; run `make run` first (or wait for the running job)", file=sys.stderr)
        return 1
    ids = catalogue["item_id"].to_numpy()
    wanted = [part.strip() for part in items.split(",") if part.strip()]
    known = {str(item): position for position, item in enumerate(ids)}
    missing = [item for item in wanted if item not in known]
    if missing or not wanted:
        print(f"unknown item ids {missing} (not in clean.items)" if missing else "give at least one item id",
              file=sys.stderr)
        return 1
    import numpy as np

    vectors = np.ascontiguousarray(catalogue["embedding"].to_numpy(), dtype=np.float32)
    with _served_parts(layout) as parts:  # the version is kept whole while it is read
        served = _served_models(layout, parts, model_version, ids, vectors, catalogue["model"][0])
        if served is None:
            return 1
    model, model_index, key, trust, lm_index, settings, counts, ease, text_cf_route = served
    merged = adhoc.history_recall(np.array([known[item] for item in wanted]), model, model_index, lm_index,
                                  vectors, k, settings, train_counts=counts, ease=ease, text_cf=text_cf_route,
                                  trust=trust)
    texts = catalogue["item_text"].to_list()
    print(f"recall for a new user who liked {', '.join(wanted)} ({key}, two-tower trust {trust:g}; "
          f"the published run's models and route settings):")
    for rank, (position, score) in enumerate(zip(merged.items[0], merged.scores[0]), start=1):
        if position < 0:
            break
        routes = ",".join(f"{name}#{ranks[0, rank - 1]}" for name, ranks in merged.route_ranks.items()
                          if ranks[0, rank - 1] > 0)
        print(f"{rank:>3}  {score:6.3f}  {str(ids[position]):>8}  {texts[position]}  [{routes}]")
    return 0


@contextmanager
def _served_parts(layout: HomeLayout):
    """The current serving version's parts, held by a reader's lease; a home whose lists were
    published before serving versions existed: the models as their assets last wrote them."""
    from recall_pipeline.core.recall.published_folder import NotPublishedError
    from recall_pipeline.core.recall.serving_version import ServingParts

    if layout.serving.published.current_name() is not None:
        with layout.serving.published.reading() as folder:
            yield ServingParts.of_version(folder)
        return
    print("no serving version published yet (materialize recall_candidates): reading the models as their "
          "assets last wrote them", file=sys.stderr)
    try:
        two_tower = layout.two_tower_serving.current()
    except NotPublishedError as exc:
        two_tower = layout.two_tower_versions / "none"
        print(exc, file=sys.stderr)
    yield layout.staged_parts(two_tower)


def _served_models(layout: HomeLayout, parts, model_version: str, ids, vectors, encoder: str):
    """What ad-hoc recall fuses, all from ``parts``: (two-tower model, its index, version key,
    trust, LM index, the route settings the version's lists used, the item counts of the EASE model's fit,
    the EASE model, the TextCF route); None, with the reason on stderr, when one is unusable."""
    import numpy as np

    from recall_pipeline.core.features.rating_matrix import read_rating_matrix
    from recall_pipeline.core.recall.incremental import published_route_settings, route_settings_of
    from recall_pipeline.core.recall.serving_version import MANIFEST, read_manifest
    from recall_pipeline.core.recall.index import IndexMismatchError, read_index
    from recall_pipeline.core.training.two_tower import EncoderMismatchError

    try:
        model, model_index, key, trust = _serving_model(layout, parts.two_tower, model_version, ids, vectors, encoder)
        lm_index, _ = read_index(parts.lm_index, encoder, ids, vectors)
    except (LookupError, EncoderMismatchError) as exc:
        print(exc, file=sys.stderr)
        return None
    except IndexMismatchError as exc:
        print(f"{exc} (or run `make run`, which rebuilds it)", file=sys.stderr)
        return None
    try:
        with duckdb.connect(str(layout.warehouse), read_only=True) as con:
            matrix = read_rating_matrix(con)
            # the settings the version's own lists used (its run's), else the published run's
            served = parts.ease.parent / MANIFEST
            settings = (route_settings_of(con, read_manifest(parts.ease.parent)["run_id"]) if served.is_file()
                        else published_route_settings(con))
    except ValueError as exc:
        print(f"{layout.warehouse}: {exc}", file=sys.stderr)
        return None
    stored_ease, text_cf_route = _stored_routes(parts, ids, vectors, encoder, settings)
    counts = stored_ease.item_counts if stored_ease is not None and stored_ease.item_counts is not None else (
        matrix.item_counts() if np.array_equal(matrix.item_ids, ids) else None)
    return (model, model_index, key, trust, lm_index, settings, counts,
            stored_ease.model if stored_ease else None, text_cf_route)


def _stored_routes(parts, ids, vectors, encoder: str, settings):
    """(the stored EASE model with its fit's item counts, the TextCF route) of ``parts``; None,
    with the reason on stderr, for one that is not stored or does not fit the catalogue and settings."""
    from recall_pipeline.core.training.ease.store import reusable_ease
    from recall_pipeline.core.recall.routes import TextCFRoute
    from recall_pipeline.core.training import text_cf

    ease, why = reusable_ease(parts.ease, ids, settings.ease_lambda, settings.ease_max_items,
                              settings.ease_window, settings.ease_window_weight)
    if ease is None:
        print(f"the EASE route is left out: {why}", file=sys.stderr)
    try:
        model = text_cf.load(parts.text_cf, encoder)
    except ValueError as exc:  # fitted on another encoder's vectors
        print(f"the text_cf route is left out: {exc}", file=sys.stderr)
        return ease, None
    if model is None:
        print("the text_cf route is left out: no TextCF model stored yet (materialize text_cf_model)", file=sys.stderr)
        return ease, None
    return ease, TextCFRoute.build(model, text_cf.item_features(vectors), ids)


def _serving_model(layout: HomeLayout, folder: Path, model_version: str, ids, vectors, encoder: str):
    """(model, its index, version key, its trust factor): the serving version's two-tower copy
    in ``folder`` when it is the requested version and matches the catalogue, else the version
    downloaded from MLflow, indexed here."""
    from recall_pipeline.core.training import model_registry
    from recall_pipeline.core.training import two_tower
    from recall_pipeline.core.recall.index import IndexMismatchError, build_exact_index, read_manifest
    from recall_pipeline.definitions import build_resources
    from recall_pipeline.core.training.route_trust import saved_trust
    from recall_pipeline.defs.tables import two_tower_index, two_tower_trust

    tracking_uri = build_resources(layout)["mlflow"].tracking_uri
    served = read_manifest(folder).model if (folder / "manifest.json").is_file() else None
    if model_version == SERVED and served is not None:
        version = served.rsplit("/v", 1)[-1]
    else:
        version = model_registry.resolve(tracking_uri, "champion" if model_version == SERVED else model_version)
    key = f"{model_registry.MODEL_NAME}/v{version}"
    if served == key:
        try:
            model, index, _ = two_tower_index(folder, ids, vectors, encoder)
            return model, index, key, two_tower_trust(folder)
        except IndexMismatchError as exc:  # stale against the catalogue
            print(f"the stored serving copy in {folder} does not match the catalogue ({exc}); "
                  f"serving {key} from the MLflow registry instead", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="recall-model-") as tmp:
        downloaded = model_registry.download(tracking_uri, version, Path(tmp))
        model = two_tower.load_for_catalogue(downloaded, ids, vectors, encoder)
        trust = saved_trust(two_tower.read_config(downloaded))
    return model, build_exact_index(two_tower.item_vectors(model)), key, trust


def sql(query: str, published: bool = False) -> int:
    """Run one SQL statement on the warehouse (``published``: on the read copy users query,
    ``published.duckdb``), read-only, and print the result."""
    import polars as pl

    layout = home_layout()
    path = layout.published if published else layout.warehouse
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            frame = con.sql(query).pl()
    except duckdb.Error as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    with pl.Config(tbl_rows=100, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=160):
        print(frame)
    return 0


def generate(args: argparse.Namespace) -> int:
    """Write a synthetic source (files and source.yaml) of the requested size."""
    from recall_pipeline.core.ingest import synthetic

    try:
        spec = synthetic.spec_for(args.size, users=args.users, items=args.items,
                                  interactions=args.interactions, n_clusters=args.clusters,
                                  seed=args.seed, min_per_user=args.min_per_user,
                                  text_signal=not args.no_text_signal)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    started = time.perf_counter()
    source = synthetic.write_source(synthetic.generate(spec), args.out, args.format)
    print(f"{spec.n_users} users, {spec.n_items} items, {spec.n_interactions} interactions, "
          f"{spec.n_clusters} clusters, seed {spec.seed}: written in {time.perf_counter() - started:.1f}s")
    print(f"run it:  recall-pipeline run --source {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recall-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run", help="materialize the whole asset graph")
    run_cmd.add_argument("--source", help="YAML file describing your interaction and item files")
    run_cmd.add_argument("--sample-users", type=int, help="bundled data: keep the first N users")
    run_cmd.add_argument("--accept-drop", action="store_true",
                         help="publish even if the lists' validation Recall@50 dropped beyond the noise "
                              "against the published version's (the quality gate)")
    run_cmd.add_argument("--max-train-seconds", type=float,
                         help="time budget of the recall model's training (default: none)")
    recall_cmd = commands.add_parser("recall", help="print a user's newest recall list, or recall for "
                                                    "a new user given as item ids (--items)")
    recall_cmd.add_argument("user_id", nargs="?")
    recall_cmd.add_argument("--items", help="comma-separated item ids: a new user's history, oldest first")
    recall_cmd.add_argument("--model-version", default=SERVED,
                            help="with --items: 'served' (default: the two-tower version the published lists "
                                 "used), or a registered version number, alias ('champion') or 'latest'")
    recall_cmd.add_argument("-k", type=int, default=20, help="how many items to print (default 20)")
    sql_cmd = commands.add_parser("sql", help="run a read-only SQL query on the warehouse")
    sql_cmd.add_argument("query", help="one SQL statement, e.g. \"select * from recall.latest limit 5\"")
    sql_cmd.add_argument("--published", action="store_true",
                         help="query the read copy users query (published.duckdb: recall.latest, eval.metrics, "
                              "catalog.items, ...) instead of the warehouse")
    commands.add_parser("init-home", help="create the home folder and Dagster's instance file")
    gen_cmd = commands.add_parser("generate", help="write a synthetic source (files and source.yaml)")
    gen_cmd.add_argument("--size", type=str.upper, choices=["S", "M", "L"],
                         help="S: 671 users, 9,066 items, 100,004 interactions (the bundled size); "
                              "M: 20k, 100k, 1M; L: 200k, 1M, 10M")
    gen_cmd.add_argument("--out", required=True, help="folder for the files and source.yaml")
    for count in ("users", "items", "interactions"):
        gen_cmd.add_argument(f"--{count}", type=int, help=f"number of {count} (overrides --size)")
    gen_cmd.add_argument("--clusters", type=int, default=20, help="taste clusters (1 to 24)")
    gen_cmd.add_argument("--min-per-user", type=int, default=5, help="fewest interactions of a user")
    gen_cmd.add_argument("--seed", type=int, default=0)
    gen_cmd.add_argument("--no-text-signal", action="store_true",
                         help="item titles, years and genres drawn independently of the taste clusters: "
                              "the text says nothing, collaborative filtering must carry the lists")
    gen_cmd.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.source, args.sample_users, args.max_train_seconds, args.accept_drop)
    if args.command == "recall":
        if args.items:
            return recall_items(args.items, args.k, args.model_version)
        if args.user_id is None:
            parser.error("recall needs a USER_ID or --items")
        return recall(args.user_id, args.k)
    if args.command == "sql":
        return sql(args.query, args.published)
    if args.command == "generate":
        return generate(args)
    home_layout().create()
    return 0


if __name__ == "__main__":
    sys.exit(main())
