"""The encoder's arithmetic: float32 (default) or bfloat16 matrix products (opt-in).

With the transformer's linear layers in bfloat16, a CPU with native bfloat16 dot products
encodes the bundled item texts 1.75x (AVX512-BF16) to 2.2x (AMX) faster
(``bench/perf/encode_precision.py``). Those layers store their weights in bfloat16 and round
their inputs to it, so what they feed (GELU, the attention over bfloat16 queries, keys and
values) runs in bfloat16 too; the residual sums, LayerNorm, the pooling and the normalisation
stay float32. Every bundled item text's vector is within a cosine of 0.99996 of float32's;
still, they are other vectors, so the precision is part of the encoder's identity
(``ModelIdentity.key``): embeddings and indexes made at one precision are never reused or mixed
with the other's.

Not the default: float32 vectors are those of sentence-transformers on every machine, and a CPU
without native bfloat16 emulates it more slowly than float32 (loading refuses that case).
Imported by the encoder only when it loads a bfloat16 model (torch at import).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 natively (CUDA, or a CPU oneDNN reports as able)."""
    if device.startswith("cuda"):
        return True
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Bfloat16Linear(nn.Module):
    """A frozen linear layer computed in bfloat16: weights stored in it, input rounded to it."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias)


def to_bfloat16_linears(model: nn.Module, device: str) -> nn.Module:
    """``model`` with every ``nn.Linear`` replaced (in place, for inference) by a
    :class:`Bfloat16Linear`; refuses a device without native bfloat16."""
    if not native_bfloat16(device):
        raise RuntimeError(f"encoder precision bfloat16: {device} has no native bfloat16 matrix products "
                           "(AVX512-BF16 or AMX on a CPU) and would run slower than float32; use float32")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Bfloat16Linear(child))
    return model
