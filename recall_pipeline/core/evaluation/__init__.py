"""Evaluation: the protocol's metrics, the CF baselines, the evaluation run and its report."""
