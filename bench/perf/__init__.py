"""Performance benchmarks of the running system, kept and re-run when the code they measure changes.

- ``encode_throughput``: items encoded per second, the pipeline's encoder against a plain loop;
- ``index_benchmark``: FAISS index types over 100k and 1M vectors shaped like the real ones;
- ``recall_blocks``: the memory one block of users costs in ``recall_candidates``;
- ``windowed_ease_scale``: what the EASE route's windowed term costs at scale;
- ``scale``: per-stage wall time and peak memory of the whole graph at several sizes;
- ``feedback_refresh``: the time a feedback refresh takes to publish, step by step;
- ``feedback_burst``: how far a planted feedback attack moves a target, with and without the
  burst guard;
- ``faults``: the fault table of docs/operations.md, each fault done for real.

Run from the repository root, e.g. ``.venv/bin/python -m bench.perf.scale --help``; each
script's recorded runs are under ``bench/results/perf/``.
"""
