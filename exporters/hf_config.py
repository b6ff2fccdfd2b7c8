"""The Hugging Face config of a pruned model: the new head counts, FFN width and hidden width,
where the config has a field for them and every layer was pruned alike.

A config holds one number per width for all layers; when layers kept different widths, the fields
stay as they were and `spa_pruned_widths` lists each group's width instead (the ONNX model itself
is what runs, so this only affects tools that rebuild the PyTorch model from the config).
"""
from __future__ import annotations

import numpy as np

# The names each width goes by across architectures.
HEADS = ("num_attention_heads", "n_head", "encoder_attention_heads", "num_heads")
KV_HEADS = ("num_key_value_heads", "multi_query_group_num")
FFN = ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim", "d_ff", "encoder_ffn_dim", "mlp_dim")
HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
HEAD_DIM = ("head_dim", "d_kv")


def pruned_config(config: dict, analysis, plan) -> tuple[dict, list[str]]:
    """(new config, notes on what was and was not updated)."""
    config = dict(config)
    notes = []
    kept = {g.key: g.width - len(plan.removed.get(g.key, [])) for g in analysis.groups}
    pruned = [g for g in analysis.groups if plan.removed.get(g.key)]
    if not pruned:
        return config, ["nothing was pruned"]

    heads = [g for g in pruned if g.kind == "heads"]
    if heads:
        _update_heads(config, heads, kept, notes)
    ffn_width = _first(config, FFN)
    if ffn_width is not None:
        ffn = [g for g in pruned if g.kind == "channels" and g.width == ffn_width[1]]
        _set_uniform(config, ffn_width[0], [kept[g.key] for g in ffn], "FFN width", notes)
    hidden_width = _first(config, HIDDEN)
    hidden = [g for g in pruned if g.kind == "hidden"]
    if hidden and hidden_width is not None:
        name, old = hidden_width
        head_dim = _first(config, HEAD_DIM)
        n_heads = _first(config, HEADS)
        if head_dim is None and n_heads is not None and old % n_heads[1] == 0:
            config["head_dim"] = old // n_heads[1]  # it was implied by hidden / heads
        _set_uniform(config, name, [kept[g.key] for g in hidden if g.width == old], "hidden width", notes)
    config["spa_pruned_widths"] = {g.key: kept[g.key] for g in pruned}
    return config, notes


def _update_heads(config: dict, groups, kept: dict, notes: list[str]) -> None:
    heads_field = _first(config, HEADS)
    if heads_field is None:
        notes.append("heads pruned, but the config has no head-count field")
        return
    name, n_heads = heads_field
    kv_field = _first(config, KV_HEADS)
    n_kv = kv_field[1] if kv_field else n_heads
    per_root = [n_heads // g.width for g in groups if g.width in (n_heads, n_kv) and n_heads % g.width == 0]
    if len(per_root) != len(groups):
        notes.append("head groups do not match the config's head count; head fields left as they were")
        return
    new_q = [kept[g.key] * (n_heads // g.width) for g in groups]
    _set_uniform(config, name, new_q, "query heads", notes)
    if kv_field and len(set(new_q)) == 1:
        _set_uniform(config, kv_field[0], [kept[g.key] * (n_kv // g.width) for g in groups], "key/value heads",
                     notes)


def _set_uniform(config: dict, name: str, values: list[int], what: str, notes: list[str]) -> None:
    if not values:
        return
    if len(set(values)) == 1:
        config[name] = int(values[0])
        notes.append(f"{name}: {values[0]}")
    else:
        notes.append(f"{what} differ per layer ({min(values)}–{max(values)}); {name} left as it was")


def _first(config: dict, names) -> tuple[str, int] | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return name, int(value)
    return None
