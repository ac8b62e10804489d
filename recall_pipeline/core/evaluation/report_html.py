"""The evaluation report as one self-contained HTML file (plots embedded as PNG).

The report holds the models x metrics tables per slice, what cleaning held back (quarantined
rows, suspected feedback bursts), the Recall@K curves, recall against
catalogue coverage, the popularity of recommended items against the catalogue's, the share of
each recall route in the published lists, and the baselines' validation tuning.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recall_pipeline.core.evaluation.protocol import USERS_SLICE, Report

INGEST_SLICE = "ingest"  # core.evaluation.evaluation_report's rows of what cleaning held back

SLICE_ORDER = ("warm", "sparse", "cold")


def metrics_table(rows: list[dict], slice_name: str) -> pl.DataFrame:
    """One row per model, one column per metric@k, for one slice."""
    frame = pl.DataFrame(rows).filter(pl.col("slice") == slice_name)
    if frame.is_empty():
        return frame
    order = frame.select("model").unique(maintain_order=True)["model"].to_list()
    table = frame.with_columns(name=pl.format("{}@{}", "metric", "k")).pivot(
        "name", index="model", values="value")
    return table.with_columns(pl.col("model").replace_strict(
        {m: i for i, m in enumerate(order)}, return_dtype=pl.Int64).alias("_order")
    ).sort("_order").drop("_order")


def mlflow_metrics(rows: list[dict]) -> dict[str, float]:
    """Metric rows as MLflow metric names (``<model>.<slice>.<metric>_at_<k>``; no '@' allowed)."""
    return {f"{r['model'].replace(':', '_')}.{r['slice']}.{r['metric']}_at_{r['k']}": r["value"] for r in rows}


def _figure_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def plots(report: Report, catalogue_counts: np.ndarray, route_share: dict[str, float]) -> dict[str, bytes]:
    """PNG images by name."""
    warm = pl.DataFrame(report.rows).filter(pl.col("slice") == "warm")

    def curves(ax):
        for model, curve in report.curves.items():
            ax.plot(np.arange(1, len(curve) + 1), curve, label=model)
        ax.set(xlabel="K", ylabel="Recall@K (warm slice)", title="Recall@K")
        ax.legend(loc="lower right")  # rising curves; "best" searched every point: 1.2 s a report
        ax.grid(alpha=0.3)

    def recall_vs_coverage(ax):
        for model in report.curves:
            pick = warm.filter(pl.col("model") == model)
            recall = pick.filter((pl.col("metric") == "recall") & (pl.col("k") == 50))["value"]
            coverage = pick.filter(pl.col("metric") == "coverage")["value"]
            if len(recall) and len(coverage):
                ax.scatter(coverage[0], recall[0], s=40)
                ax.annotate(model, (coverage[0], recall[0]), textcoords="offset points", xytext=(5, 5))
        ax.set(xlabel="catalogue coverage@50", ylabel="Recall@50", title="Recall against coverage (warm)")
        ax.grid(alpha=0.3)

    def popularity(ax):
        # cumulative share of items with at most x training interactions: far right = head
        ax.ecdf(catalogue_counts + 1, lw=2.5, color="black", label="catalogue")
        for model, counts in report.recommended_popularity.items():
            if len(counts):
                ax.ecdf(counts + 1, label=model)
        ax.set(xscale="log", xlabel="training interactions + 1", ylabel="cumulative share",
               title="Popularity of recommended items (top 50) vs catalogue")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)

    def routes(ax):
        names = list(route_share)
        ax.bar(names, [route_share[n] for n in names])
        ax.set(ylabel="share of published candidates", title="Recall routes in the final lists", ylim=(0, 1))

    return {"recall_curves": _figure_png(curves), "recall_vs_coverage": _figure_png(recall_vs_coverage),
            "popularity": _figure_png(popularity), "route_share": _figure_png(routes)}


def _table_html(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{v:.4f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                         for v in row) + "</tr>"
        for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ingest_html(rows: list[dict]) -> str:
    counts = {r["metric"]: int(r["value"]) for r in rows if r["slice"] == INGEST_SLICE}
    if not counts:
        return ""
    items = "".join(f"<li><code>{html.escape(metric)}</code>: {value:,}</li>" for metric, value in counts.items())
    return ("<h2>Data held back at cleaning</h2><p>Interaction rows in <code>quarantine.interactions</code>; "
            "<code>suspected_burst_rows</code> are the rows of coordinated bursts of new accounts "
            "(feedback attacks), kept out of training and of every list.</p><ul>" + items + "</ul>")


def selection_html(how: str, record: dict) -> str:
    """The fusion the evaluated lists served and how it was chosen (``route_selection``): the
    decision, the figures on the validation cut of each route alone and of the best candidates."""
    if how != "searched" or not record:
        return (f"<h2>Fusion</h2><p>{html.escape(how)}: the route settings were given by config, not chosen "
                "on validation.</p>")
    if not record.get("candidates"):
        return f"<h2>Fusion</h2><p>{html.escape(record['decision'])}.</p>"
    routes = pl.DataFrame([{"route": name, **figures} for name, figures in record["routes"].items()])
    top = pl.DataFrame(record["candidates"]).sort("recall@50", descending=True).head(10)
    left_out = "".join(f"<li>{html.escape(n)}: {html.escape(w)}</li>" for n, w in record.get("left_out", {}).items())
    return (f"<h2>Fusion chosen on the validation cut</h2><p>{html.escape(record['decision'])}. "
            f"{record['users']:,} held-out users, {len(record['candidates'])} candidates in {record['seconds']:.1f} s"
            f"{' (time budget reached)' if record['budget_reached'] else ''}; the test split was not read.</p>"
            + (f"<p>Routes not searched:</p><ul>{left_out}</ul>" if left_out else "")
            + f"<h3>Each route alone</h3>{_table_html(routes)}<h3>Best candidates</h3>{_table_html(top)}")


def comparisons_html(compared: pl.DataFrame) -> str:
    """``final`` against each model on the same users (``eval.comparisons`` rows): the gain and
    its 95% paired interval."""
    if compared.is_empty():
        return ""
    frame = compared.select(
        "against", figure=pl.format("{} {}@{}", "slice", "metric", "k"), gain="gain", lower="lower", upper="upper",
        users="users").sort("figure", "against")
    return ("<h2>final against each model, user by user</h2><p>The gain of <code>final</code> over each "
            "model on the same users and its 95% paired-bootstrap interval (<code>eval.comparisons</code>): "
            "where the interval holds 0, another sample of as many users could turn the gap around.</p>"
            + _table_html(frame))


def render_html(report: Report, images: dict[str, bytes], run_id: str, model_version: str,
                exclusion_note: str = "", selection: str = "", comparisons: pl.DataFrame | None = None) -> str:
    sections = []
    users = {r["metric"]: int(r["value"]) for r in report.rows if r["slice"] == USERS_SLICE}
    for slice_name in SLICE_ORDER:
        table = metrics_table(report.rows, slice_name)
        if not table.is_empty():
            scored, total = users.get(f"{slice_name}_scored"), users.get(f"{slice_name}_in_slice")
            sample = (f"<p>A seeded sample of {scored:,} of the slice's {total:,} users "
                      f"(max_evaluation_cells).</p>" if scored is not None and scored < total else "")
            sections.append(f"<h2>{slice_name} slice</h2>{sample}{_table_html(table)}")
    if comparisons is not None:
        sections.append(comparisons_html(comparisons))
    sections.append(selection)
    sections.append(_ingest_html(report.rows))
    tuning = "".join(
        f"<li>{html.escape(name)}: {html.escape(t['parameter'])} = {t['value']:g} "
        f"(validation Recall@50 by value: "
        + ", ".join(f"{v:g}: {r:.4f}" for v, r in t["validation_recall@50"].items()) + ")</li>"
        for name, t in report.tuning.items())
    figures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/></figure>'
        for name, png in images.items())
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>recall evaluation {run_id}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{display:inline-block;margin:4px}}</style>
</head><body><h1>Recall evaluation</h1>
<p>Dagster run <code>{html.escape(run_id)}</code>, model version <code>{html.escape(model_version)}</code>,
{when}. Protocol: <code>docs/EVALUATION.md</code>; every model on the same split in the same run.
Test rows the serving model trained on: {html.escape(exclusion_note or "not checked")}.</p>
{''.join(sections)}<h2>Baseline tuning (validation cut of training)</h2><ul>{tuning}</ul>
<h2>Plots</h2>{figures}</body></html>"""


def write_report(folder: Path, latest: Path, run_id: str, html_text: str, images: dict[str, bytes]) -> Path:
    """Write ``evaluation_<run>.html`` (and the PNGs beside it) in ``folder``, and the same page
    to ``latest`` by one rename."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"evaluation_{run_id}.html"
    path.write_text(html_text)
    for name, png in images.items():
        (folder / f"{name}_{run_id}.png").write_bytes(png)
    tmp = latest.with_name(f".{latest.name}.tmp")
    tmp.write_text(html_text)
    tmp.replace(latest)
    return path


def log_to_mlflow(tracker, report: Report, path: Path) -> None:
    """The figures as metrics, the baselines' tuned values as parameters and the page as an
    artifact of the active MLflow run (``tracker``: the mlflow module or a client with the same
    logging calls)."""
    tracker.log_metrics(mlflow_metrics(report.rows))
    tracker.log_params({f"{name}.{t['parameter']}": t["value"] for name, t in report.tuning.items()})
    tracker.log_artifact(str(path))
