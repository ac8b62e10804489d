"""Where instance files of earlier releases find the run launcher.

A ``dagster.yaml`` written before the runtime plumbing moved to :mod:`recall_pipeline.runtime`
names ``module: recall_pipeline.run_recovery``; it keeps loading through this alias. New homes
name the new module (``settings.INSTANCE_YAML``).
"""

from recall_pipeline.runtime.run_recovery import RecoveringRunLauncher

__all__ = ["RecoveringRunLauncher"]
