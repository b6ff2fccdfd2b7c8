"""BatchNorm-statistics-matched inputs (placeholder until written)."""
from __future__ import annotations


def bn_matched_feeds(model, samples, seed=0):
    return None
