"""Non-personalised and collaborative baselines, scored over the rating matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Training interaction count per item (MostPopular's score)."""
    return np.asarray((train != 0).sum(axis=0)).ravel().astype(np.float64)
