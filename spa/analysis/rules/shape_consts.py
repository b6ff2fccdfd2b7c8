"""Target shapes that exporters compute at run time (a dynamic batch and sequence length spliced
with constant widths by a Concat): checking that every channel axis is spelled by a rewritable
constant, and rewriting those constants after slicing. Shared by Reshape and Expand."""
from __future__ import annotations

from spa.analysis.rules.base import Block, const_array
from spa.graph.shape_eval import constant_origins, shape_entries


def check_computed_shape(ctx, shape_value, out_value, free_entries: tuple[int, ...], axes=None) -> None:
    """Block unless each channel axis of `out_value` has an entry in `free_entries` (inferred
    widths: -1 for Reshape, 1 for Expand), one held by a constant slicing can rewrite, or one read
    at run time from a channel axis that shrinks with it (or that slicing can replace)."""
    entries = shape_entries(shape_value)
    if entries is None:
        raise Block("the target shape is computed at run time")
    origins = constant_origins(shape_value) or [None] * len(entries)
    shift = len(ctx.dims(out_value)) - len(entries)
    # (channel axis, its space) to check; a space not made yet (a source trace) is None
    pairs = [(a, sp) for sp in ctx.spaces_on(out_value) for a in sp.axes] if axes is None else [(a, None) for a in axes]
    for axis, space in pairs:
        i = axis - shift
        if i < 0 or entries[i] in free_entries or origins[i] is not None:
            continue
        if isinstance(entries[i], tuple):
            # Read at run time from another tensor and spliced in with other entries: fine
            # when that tensor's axis is a channel axis of the same group.
            name, read_axis = entries[i][:2]
            source = next((s for s in ctx.spaces_on(ctx.value_named(name)) if read_axis in s.axes), None)
            if source is None:
                raise Block(f"channel axis {axis} takes its width from a non-channel dim of '{name}'")
            if space is None:  # not created yet (a source trace): no group to share
                raise Block(f"channel axis {axis} takes its width from '{name}' at run time")
            ctx.require_same_group(source, space, f"channel axis {axis} of '{out_value.name}' takes "
                                   f"its width from '{name}' at run time")
            continue
        raise Block(f"the computed target shape fixes the width of channel axis {axis}")


def rewrite_computed_shape(sctx, shape_value, old: tuple, new: tuple, free_entries: tuple[int, ...]) -> None:
    """Write the new widths into the constants a computed target shape is built from; a width read
    at run time from a tensor that did not shrink alike becomes a constant."""
    origins = constant_origins(shape_value)
    entries = shape_entries(shape_value)
    if origins is None or entries is None:
        return
    shift = len(old) - len(origins)
    for axis, (o, n) in enumerate(zip(old, new)):
        i = axis - shift
        if o == n or i < 0 or origins[i] is None or entries[i] in free_entries:
            continue
        if origins[i][0] == "const":
            _, concat, index, element = origins[i]
            data = const_array(concat.inputs[index]).copy()
            data.reshape(-1)[element] = n
            sctx.set_const_input(concat, index, data)
        elif _width_now(sctx, entries[i]) != n:
            _, concat, index = origins[i]
            sctx.set_const_input(concat, index, [n])


def _width_now(sctx, entry) -> int | None:
    """What a run-time entry (tensor, axis[, factor]) reads after slicing."""
    value = sctx.value_named(entry[0])
    if value is None:
        return None
    dim = sctx.new_dims(value)[entry[1]]
    return dim * (entry[2] if len(entry) > 2 else 1) if isinstance(dim, int) else None
