"""A trained model as a folder, and that model over today's catalogue.

The folder is what the MLflow registry stores and what serving copies beside its index: weights
as safetensors, item ids as a plain .npy, and a JSON config with the ``Architecture`` (all that
rebuilding the towers needs), whether the LM embeddings were fine-tuned, and the caller's
metadata (encoder, best epoch...). The training run's settings are not in it: they are the MLflow
run's parameters and serving never reads them.

Folders saved before the settings were split hold one ``settings`` dict with every field;
registries keep such versions, so ``load_model`` still reads them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recall_pipeline.core.ids import storable_ids
from recall_pipeline.core.training.two_tower.settings import Architecture
from recall_pipeline.core.training.two_tower.towers import TwoTower

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ITEM_IDS_FILE = "item_ids.npy"


class EncoderMismatchError(RuntimeError):
    """The model was trained on another LM's item embeddings than the ones it is given."""


def save_model(model: TwoTower, item_ids: np.ndarray, folder: Path, extra: dict | None = None) -> Path:
    """Weights as safetensors, the architecture and metadata as JSON, item ids as a plain .npy."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    # the fine-tuned LM layers are not saved: their effect is in the stored item embeddings (lm)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()
               if not name.startswith("lm_top.")}, folder / WEIGHTS_FILE)
    config = {"architecture": asdict(model.architecture), "lm_finetuned": model.lm_finetuned,
              "lm_dim": int(model.lm.shape[1]), "n_items": int(model.lm.shape[0]), **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    np.save(folder / ITEM_IDS_FILE, storable_ids(item_ids), allow_pickle=False)
    return folder


def read_config(folder: Path) -> dict:
    """The saved config (architecture and the metadata given to :func:`save_model`), without the weights."""
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def load_model(folder: Path) -> tuple[TwoTower, np.ndarray, dict]:
    """The model, its catalogue item ids and its config (as saved), from a ``save_model`` folder."""
    from safetensors.torch import load_file

    config = read_config(folder)
    architecture, lm_finetuned = _architecture(config)
    model = TwoTower(np.zeros((config["n_items"], config["lm_dim"]), np.float32), architecture)
    model.lm_finetuned = lm_finetuned
    model.load_state_dict(load_file(Path(folder) / WEIGHTS_FILE))
    model.eval()
    return model, np.load(Path(folder) / ITEM_IDS_FILE, allow_pickle=False), config


def _architecture(config: dict) -> tuple[Architecture, bool]:
    """(architecture, LM fine-tuned) of a saved config, in the current or the one-dict format."""
    if "architecture" in config:
        return Architecture(**config["architecture"]), bool(config["lm_finetuned"])
    settings = config["settings"]
    names = {f.name for f in fields(Architecture)}
    return (Architecture(**{k: v for k, v in settings.items() if k in names}),
            bool(settings.get("lm_finetune_layers", 0)))


def extend_catalogue(model: TwoTower, model_item_ids: np.ndarray, item_ids: np.ndarray,
                     lm_vectors: np.ndarray) -> TwoTower:
    """The model over another catalogue (e.g. with new items): the LM embeddings of
    ``item_ids`` and, for items the model knew, their learned id embeddings; new items are
    served from text alone."""
    moved = copy.deepcopy(model)
    known = np.isin(item_ids, model_item_ids)
    old = np.searchsorted(model_item_ids, item_ids[known])
    lm = torch.tensor(np.asarray(lm_vectors, np.float32))
    if model.lm_finetuned:  # known items keep their fine-tuned LM embeddings
        lm[np.flatnonzero(known)] = model.lm[old]
    moved.lm = lm
    has_id = torch.zeros(len(item_ids), dtype=torch.bool)
    has_id[np.flatnonzero(known)] = model.item_tower.has_id[old]
    moved.item_tower.has_id = has_id
    if model.item_tower.ids is not None:
        weight = torch.zeros(len(item_ids), model.architecture.dim)
        weight[np.flatnonzero(known)] = model.item_tower.ids.weight.detach()[old]
        moved.item_tower.ids = nn.Embedding.from_pretrained(weight, freeze=True)
    return moved


def load_for_catalogue(folder: Path, item_ids: np.ndarray, lm_vectors: np.ndarray, encoder: str) -> TwoTower:
    """A saved model over the current catalogue (``item_ids`` sorted, their LM embeddings).

    Items added since training are served from their text alone; an item-tower input from
    another encoder than the model's would be meaningless, so that is refused."""
    model, model_item_ids, config = load_model(folder)
    if config.get("encoder") not in (None, encoder):
        raise EncoderMismatchError(
            f"the model in {folder} was trained on {config['encoder']} embeddings, the catalogue has "
            f"{encoder} embeddings: retrain recall_model (materialize it) after changing the encoder")
    return extend_catalogue(model, model_item_ids, np.asarray(item_ids), lm_vectors)
