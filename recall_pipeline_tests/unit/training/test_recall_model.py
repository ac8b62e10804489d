"""The recall model's settings: one flat config in, both halves out, the same MLflow parameters."""

from dataclasses import asdict

import pytest

from recall_pipeline.core.training import two_tower
from recall_pipeline.core.training.recall_model import ModelSettings, flat_params, settings_from


def test_settings_from_splits_a_flat_config_into_architecture_and_training():
    settings = settings_from({"dim": 64, "temperature": 0.2, "id_dropout": 0.25, "lm_finetune_layers": 1})
    assert settings.architecture == two_tower.Architecture(dim=64, temperature=0.2)
    assert settings.training == two_tower.TrainingSettings(id_dropout=0.25, lm_finetune_layers=1)
    assert settings_from({}) == ModelSettings()
    with pytest.raises(ValueError, match=r"unknown two-tower settings \['dimension'\]"):
        settings_from({"dimension": 64})


# The parameter names runs logged before the settings were split into two halves; new runs are
# compared with them by these names.
NAMES_BEFORE_THE_SPLIT = {
    "dim", "hidden", "history_length", "id_embeddings", "id_dropout", "temperature", "logq", "batch_size",
    "learning_rate", "weight_decay", "max_epochs", "patience", "refit", "rating_max", "seed",
    "lm_finetune_layers", "lm_learning_rate"}


def changed(value):
    """A value of the same type as ``value`` that differs from it (a text: another choice)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        from recall_pipeline.core.training.two_tower.settings import REFITS

        return next(choice for choice in REFITS if choice != value)
    return value + 1 if isinstance(value, int) else value * 2 + 0.25


def parsed(text: str, like):
    """An MLflow parameter's text read back as the type of ``like``."""
    if isinstance(like, bool):
        return {"True": True, "False": False}[text]
    return type(like)(text)


def test_mlflow_parameters_carry_every_setting_under_its_own_name():
    """Every field of both halves, each set away from its default, comes out as one parameter
    of its own name holding that value; read back, the parameters give the same settings
    (nothing lost, nothing sent to the wrong half), and the names of older runs are all there."""
    defaults = {name: value for half in ModelSettings() for name, value in asdict(half).items()}
    overrides = {name: changed(value) for name, value in defaults.items()}
    settings = settings_from(overrides)
    assert all(getattr(half, name) != defaults[name] for half in settings for name in asdict(half))
    params = flat_params(settings)
    assert params == {name: str(value) for name, value in overrides.items()}
    assert settings_from({name: parsed(text, defaults[name]) for name, text in params.items()}) == settings
    assert NAMES_BEFORE_THE_SPLIT <= set(params)


def test_stored_validation_lists_are_the_cross_fitted_ones_where_there_are_any():
    """The fusion's users in early stopping's sample keep their cross-fitted lists; the others
    are ranked by the early-stopping model (its fit items left out)."""
    from types import SimpleNamespace

    import numpy as np
    import scipy.sparse as sp

    from recall_pipeline.core.recall.route_selection import selection_rows
    from recall_pipeline.core.training.recall_model import validation_lists

    n_users, n_items, depth = 6, 5, 3
    holdout = sp.csr_matrix(np.eye(n_users, n_items))      # user u held out item u (user 5: nothing)
    fit = sp.csr_matrix(([1.0], ([0], [4])), shape=(n_users, n_items))  # user 0 saw item 4

    def scorer(rows):  # item i scores i: the best item is the last one not seen
        return np.tile(np.arange(n_items, dtype=np.float32), (len(rows), 1))

    phase = SimpleNamespace(holdout=holdout, scorer=scorer, fit=SimpleNamespace(matrix=fit))
    rm = SimpleNamespace(user_ids=np.array([10, 11, 12, 13, 14, 15]), item_ids=np.arange(n_items))
    rows = selection_rows(holdout)
    assert rows.tolist() == [0, 1, 2, 3, 4]
    crossed = (np.array([1, 3]), np.array([[0, 1, 2, 3], [2, 2, 2, 2]]))
    users, lists = validation_lists(phase, rm, depth, cross_fitted=crossed)
    assert users.tolist() == [10, 11, 12, 13, 14]
    assert lists.tolist() == [[3, 2, 1], [0, 1, 2], [4, 3, 2], [2, 2, 2], [4, 3, 2]]
    assert validation_lists(phase, rm, depth)[1].tolist() == [[3, 2, 1]] + [[4, 3, 2]] * 4
