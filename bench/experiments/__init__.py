"""Closed experiments: ideas tried on validation data (never the test split) and not kept.

Each script answers one question with its figures in ``bench/results/experiments/`` under the
script's name; none of them feeds the pipeline. ``lm_finetune`` measures fine-tuning the LM's
top layers inside the two-tower item tower (the pipeline keeps the LM frozen); the ``probe_*``
scripts try other routes, priors, targets and fusion rules (SASRec, a time-aware item-to-item
model, beeFormer, a learned ranker, rating and release-time priors, ...). Their docstrings say
what each compares.

Most read a home folder that a full run of the bundled data has filled. Run from the repository
root, e.g. ``.venv/bin/python -m bench.experiments.probe_sasrec --home .recall``; the fused-list
probes share ``--two-tower-cache FILE.npy`` to train the validation two-tower model once.
``probe_learned_fusion`` needs scikit-learn: ``pip install -e '.[bench]'``.
"""
