"""The recall model's settings: one flat config in, both halves out, the same MLflow parameters."""

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


def test_mlflow_parameters_keep_the_names_and_values_of_runs_before_the_split():
    """Runs logged before the settings were split are compared with new ones by these names."""
    assert flat_params(settings_from({"dim": 64, "refit": False})) == {
        "dim": "64", "hidden": "256", "history_length": "50", "id_embeddings": "True", "id_dropout": "0.5",
        "temperature": "0.1", "logq": "True", "batch_size": "1024", "learning_rate": "0.002",
        "weight_decay": "1e-05", "max_epochs": "30", "patience": "3", "refit": "False", "rating_max": "5.0",
        "seed": "0", "lm_finetune_layers": "0", "lm_learning_rate": "2e-05",
        # added with the scale settings (runs before them trained with neither limit)
        "max_validation_users": "20000", "max_train_seconds": "0.0",
        # added when validation was also capped in users x items (1M items: 2,000 users)
        "max_validation_cells": "2000000000"}
