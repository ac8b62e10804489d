"""The validation trade of recall for reach behind ``route_selection.COVERAGE_VS_PLAIN_EASE``.

Builds every route on the validation cut of a home that a full run has filled (as the
``route_settings`` asset does: ``core.recall.validation_routes``), then runs the selection at a
range of reach targets (coverage@50 as a multiple of plain EASE's) and prints the chosen
fusion's validation Recall@50, NDCG@10, coverage@50 and long-tail share, and the settings. The
test split is never read. Recorded run: bench/results/tuning/coverage_floor.txt.

    .venv/bin/python -m bench.tuning.coverage_floor [--home .recall] [--targets 0 1.5 2 2.5 3]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import polars as pl  # noqa: E402

from recall_pipeline.core.features.user_profiles import ProfileSettings  # noqa: E402
from recall_pipeline.core.recall import route_selection  # noqa: E402
from recall_pipeline.core.recall.routes import RouteSettings  # noqa: E402
from recall_pipeline.core.recall.validation_routes import validation_routes  # noqa: E402
from recall_pipeline.defs import tables  # noqa: E402
from recall_pipeline.resources import PipelineHome, TextEncoderResource, Warehouse  # noqa: E402
from recall_pipeline.settings import HomeLayout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=Path(".recall"))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.0, 1.5, 2.0, 2.5, 3.0])
    args = parser.parse_args()
    layout = HomeLayout(args.home.resolve())
    inputs = tables.selection_inputs(Warehouse(path=str(layout.warehouse)), PipelineHome(root=str(layout.root)))
    start = RouteSettings()
    routes, left_out = validation_routes(inputs.train, inputs.catalogue, start, TextEncoderResource().get().encode,
                                         ProfileSettings(), inputs.text_cf_setting, inputs.model_lists, inputs.cut,
                                         route_selection.DEFAULT_MAX_USERS)
    rows = []
    for target in args.targets:
        selection = route_selection.select(routes, start, inputs.trust, coverage_vs_plain_ease=target)
        weights = selection.settings.weights
        rows.append({"target": target, "reach": selection.floors["coverage@50 reach target"], **selection.chosen,
                     **{f"w_{name}": weights[name] for name in ("two_tower", "ease", "lm_profile", "lm_interest",
                                                                "text_cf")},
                     "discount": selection.settings.popularity_discount, "rrf_c": selection.settings.rrf_c})
    print(f"{routes.users} validation users; routes left out: {left_out or 'none'}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_column_data_types=True):
        print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
