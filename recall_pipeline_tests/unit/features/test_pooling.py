"""The pooling modes equal sentence-transformers' ``Pooling`` (the reference), on padded batches
of random token states with rows of different lengths, and the folder's config is read in both
of its formats."""

import json

import numpy as np
import pytest
import torch

from recall_pipeline.core.features.pooling import MODES, pool, pooling_modes


def reference(states, mask, modes):
    from sentence_transformers.sentence_transformer.modules import Pooling

    pooling = Pooling(states.shape[-1], pooling_mode=modes[0] if len(modes) == 1 else modes)
    return pooling({"token_embeddings": states, "attention_mask": mask})["sentence_embedding"]


@pytest.mark.parametrize("modes", [(mode,) for mode in MODES] + [("cls", "mean", "max")])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_every_mode_equals_sentence_transformers(modes, padding):
    generator = torch.Generator().manual_seed(7)
    states = torch.randn(5, 9, 6, generator=generator)
    lengths = [9, 1, 4, 7, 2]
    mask = torch.zeros(5, 9, dtype=torch.int64)
    for row, length in enumerate(lengths):
        if padding == "right":
            mask[row, :length] = 1
        else:
            mask[row, 9 - length:] = 1
    ours = pool(states, mask, modes)
    assert ours.shape == (5, 6 * len(modes))
    np.testing.assert_allclose(ours.numpy(), reference(states, mask, modes).numpy(), rtol=1e-5, atol=1e-6)


def test_the_folder_says_which_modes(tmp_path):
    assert pooling_modes(None) == ("mean",) and pooling_modes(tmp_path) == ("mean",)
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"word_embedding_dimension": 4, "pooling_mode_cls_token": True,
                                  "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True}))
    assert pooling_modes(tmp_path) == ("cls", "max")
    config.write_text(json.dumps({"embedding_dimension": 4, "pooling_mode": "lasttoken"}))
    assert pooling_modes(tmp_path) == ("lasttoken",)
    config.write_text(json.dumps({"embedding_dimension": 4, "pooling_mode": ["mean", "weightedmean"]}))
    assert pooling_modes(tmp_path) == ("mean", "weightedmean")
    config.write_text(json.dumps({"embedding_dimension": 4, "pooling_mode": "median"}))
    with pytest.raises(ValueError, match=r"config.json: unknown pooling mode\(s\) \['median'\]"):
        pooling_modes(tmp_path)
