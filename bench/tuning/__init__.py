"""The tools that choose the pipeline's settings on validation data (never the test split).

- ``tune_fusion``: the EASE route's recency weighting and windowed term, the routes' fusion
  weights, the popularity discount, the MMR lambda and the text_cf route's weight;
- ``tune_two_tower``: two-tower model settings, each trained and early-stopped as
  ``recall_model`` does before its refit.

Both read a home folder that a full run has filled. Run from the repository root, e.g.
``.venv/bin/python -m bench.tuning.tune_fusion --home .recall``; the recorded runs behind the
current defaults are under ``bench/results/tuning/``.
"""
