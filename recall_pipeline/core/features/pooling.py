"""Sentence-transformers' pooling, read from a model folder and applied to padded token states.

A model folder says how its token states become one sentence vector (``1_Pooling/config.json``:
mean for MiniLM; also cls, max, mean_sqrt_len_tokens, weightedmean, lasttoken, or several
concatenated). sentence-transformers' ``Pooling`` module does this, but importing its package
costs about 4 s per process (it pulls in scikit-learn), paid by every CLI run and every step
process that encodes: so the modes are applied here, on the padded path ``Pooling`` takes for a
plain transformer's output, and a test holds every mode equal to ``Pooling``'s.
"""

from __future__ import annotations

import json
from pathlib import Path

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# the older config format: one boolean per mode, concatenated in this order
LEGACY_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
               "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
               "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
CONFIG = Path("1_Pooling") / "config.json"


def pooling_modes(folder: Path | None) -> tuple[str, ...]:
    """The folder's pooling modes (its config's ``pooling_mode``, or the legacy booleans); mean
    when the folder has no pooling config, as sentence-transformers does."""
    if folder is None or not (folder / CONFIG).is_file():
        return ("mean",)
    config = json.loads((folder / CONFIG).read_text())
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(mode for key, mode in LEGACY_KEYS.items() if config.get(key, False)) or ("mean",)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ValueError(f"{folder / CONFIG}: unknown pooling mode(s) {unknown}; known: {MODES}")
    return modes


def pool(states, attention_mask, modes: tuple[str, ...]):
    """One vector per row of ``states`` (batch x tokens x dim) for each mode, concatenated."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled = []
    for mode in modes:
        if mode == "cls":  # the first token that is not padding
            first = attention_mask.to(torch.int).argmax(dim=1)
            pooled.append(states[torch.arange(states.shape[0]), first])
        elif mode == "max":
            pooled.append(states.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            count = torch.clamp(mask.sum(dim=1), min=1e-9)
            pooled.append((states * mask).sum(dim=1) / (count if mode == "mean" else torch.sqrt(count)))
        elif mode == "weightedmean":  # position weights start at the first token that is not padding
            positions = torch.arange(1, states.shape[1] + 1, dtype=states.dtype).view(1, -1, 1)
            weights = mask * (positions - attention_mask.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
            pooled.append((states * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":  # the last token that is not padding
            last = states.shape[1] - 1 - attention_mask.flip(1).max(1).indices
            pooled.append((states * mask)[torch.arange(states.shape[0]), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}; known: {MODES}")
    return torch.cat(pooled, dim=-1)
