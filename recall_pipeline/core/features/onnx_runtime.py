"""The encoder's transformer run by ONNX Runtime instead of torch (opt-in, CPU).

The same weights, exported once per process from the loaded ``transformers`` model by torch's
TorchScript-based ONNX exporter (about 2 s for MiniLM, held in memory, never written to disk),
then run by ONNX Runtime's CPU provider with its graph optimisations (fused attention,
LayerNorm and GELU). On the bundled item texts this gives 2.5x or more the texts per second of
torch on 2 cores, with every vector within a cosine of 0.9999997 of torch's
(``bench/perf/encode_runtime.py``). The export traces the model: it is made with eager
attention on a padded example, so the attention mask is part of the traced graph for batches
with and without padding (a trace made on an unpadded example would drop it).

Why this exporter and not the newer ``torch.export``-based one (``dynamo=True``): ONNX Runtime
ran the graph of that exporter about 25% slower on the same texts, and it needs ``onnxscript``
besides. Only the pooling-free transformer runs here: pooling and normalisation stay the
encoder's (``core.features.pooling``), so the two runtimes differ only in the transformer's float
rounding. Still, those are other vectors, so the runtime is part of the encoder's identity
(``ModelIdentity.key``) and stored vectors of one runtime are never mixed with the other's.

Needs the ``onnx`` extra (``pip install -e '.[onnx]'``: onnx for the export, onnxruntime).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

# what the export's example holds: two texts of different lengths, so the batch is padded
_EXAMPLE = ("a", "an example sentence long enough to pad the first one")


def _require() -> None:
    missing = [name for name in ("onnx", "onnxruntime") if not _importable(name)]
    if missing:
        raise RuntimeError(f"encoder runtime onnx needs {' and '.join(missing)}: "
                           "pip install -e '.[onnx]' (or use the default runtime, torch)")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class OnnxTransformer:
    """A transformer's last hidden states, computed by ONNX Runtime on CPU.

    ``inputs`` are the tokenizer outputs the graph takes (``input_ids``, ``attention_mask`` and,
    where the tokenizer makes them, ``token_type_ids``)."""

    def __init__(self, model, tokenizer, num_threads: int) -> None:
        _require()
        import onnxruntime as ort

        example = tokenizer(list(_EXAMPLE), padding=True, return_tensors="pt")
        self.inputs = tuple(name for name in ("input_ids", "attention_mask", "token_type_ids") if name in example)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads)
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(_export(model, example, self.inputs), options,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, batch) -> np.ndarray:
        """The last hidden states (batch, tokens, hidden) of a tokenized ``batch`` (torch tensors)."""
        feed = {name: batch[name].numpy().astype(np.int64, copy=False) for name in self.inputs}
        return self._session.run(None, feed)[0]


def _export(model, example, inputs: tuple[str, ...]) -> bytes:
    """The ONNX bytes of ``model``'s forward from ``inputs`` to its last hidden state, with the
    batch and token axes dynamic."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(inputs, tensors))).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in (*inputs, "last_hidden_state")}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the exporter's deprecation notice and the tracer's notes on the mask's shape checks
        warnings.simplefilter("ignore")
        torch.onnx.export(LastHiddenState(model).eval(), tuple(example[name] for name in inputs), buffer,
                          input_names=list(inputs), output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return buffer.getvalue()
