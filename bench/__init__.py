"""Benchmarks, tuning tools and experiments around the pipeline; none of it is installed with it.

- ``bench.perf``: performance benchmarks of the running system (throughput, index types, memory
  per block of users, per-stage time and memory at several sizes, the feedback refresh, the
  burst guard, the fault table), kept and re-run when the code they measure changes;
- ``bench.tuning``: the tools that chose the pipeline's settings on validation data, re-run when
  a default must be chosen again;
- ``bench.experiments``: closed experiments, ideas tried on validation data and not kept, with
  their recorded runs, so that a result can be checked or an idea taken up again;
- ``bench.validation``: the validation cut of a filled home that the tuning tools and the
  experiments share;
- ``bench/results/{perf,tuning,experiments}/``: the recorded runs, one or more text files per
  script, under the script's name.

Every script is a module run from the repository root with the project's environment, e.g.

    .venv/bin/python -m bench.perf.encode_throughput --help

and says in its docstring (and ``--help``) what it measures, what it reads and how to run it.
Most tools under ``tuning`` and ``experiments`` read a home folder that a full run has filled
(``--home``). The learned-fusion experiment needs scikit-learn: ``pip install -e '.[bench]'``.
"""
