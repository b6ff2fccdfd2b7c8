"""The distillation losses: zero exactly when the student matches, positive otherwise, and the
language-model loss counts only the positions the attention mask keeps."""
from __future__ import annotations

import numpy as np
import torch

from spa.training.losses import feature_loss, softened_kl


def test_softened_kl_is_zero_for_equal_logits_and_matches_the_definition():
    rng = np.random.default_rng(0)
    t, s = torch.tensor(rng.standard_normal((4, 7))), torch.tensor(rng.standard_normal((4, 7)))
    assert float(softened_kl(t, t, 2.0)) < 1e-12
    p = torch.softmax(t / 2, -1).numpy()
    q = torch.softmax(s / 2, -1).numpy()
    expected = float((p * (np.log(p) - np.log(q))).sum(-1).mean() * 4)
    assert abs(float(softened_kl(s, t, 2.0)) - expected) < 1e-9


def test_masked_positions_do_not_count():
    rng = np.random.default_rng(1)
    t = torch.tensor(rng.standard_normal((1, 5, 9)))
    s = t.clone()
    s[0, 3:] += torch.tensor(rng.standard_normal((2, 9)))  # only the masked-out positions differ
    mask = torch.tensor([[True, True, True, False, False]])
    assert float(softened_kl(s, t, 1.0, mask)) < 1e-12
    assert float(softened_kl(s, t, 1.0)) > 1e-3


def test_feature_loss_is_scale_free_and_zero_at_equality():
    rng = np.random.default_rng(2)
    t, s = torch.tensor(rng.standard_normal((2, 16))), torch.tensor(rng.standard_normal((2, 16)))
    assert float(feature_loss(t, t)) < 1e-12
    assert abs(float(feature_loss(s, t)) - float(feature_loss(1000 * s, 1000 * t))) < 1e-9
