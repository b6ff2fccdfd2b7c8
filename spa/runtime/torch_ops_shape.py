"""to_torch op table: shape and indexing ops (Reshape, Slice, Gather, Pad, Constant, …)."""
from __future__ import annotations

import numpy as np

from spa.core.errors import UnsupportedError
from spa.runtime.torch_ops_common import as_text, axes_of, ints, unsupported


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""
    def reshape(m, n, a, x, v):
        shape = ints(x[1])
        if not a.get("allowzero", 0):
            shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
        return x[0].reshape(shape)

    def flatten(m, n, a, x, v):
        axis = a.get("axis", 1) % max(x[0].dim(), 1)
        return x[0].reshape(int(np.prod(x[0].shape[:axis], dtype=np.int64)), -1)

    def squeeze(m, n, a, x, v):
        axes = axes_of(n, a, v, 1)
        if axes is None:
            return x[0].squeeze()
        y = x[0]
        for ax in sorted((i % y.dim() for i in axes), reverse=True):
            y = y.squeeze(ax)
        return y

    def unsqueeze(m, n, a, x, v):
        axes = axes_of(n, a, v, 1)
        y = x[0]
        rank = y.dim() + len(axes)
        for ax in sorted(i % rank for i in axes):
            y = y.unsqueeze(ax)
        return y

    def slice_(m, n, a, x, v):
        if m.opset < 10:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts, ends = ints(x[1]), ints(x[2])
            axes = ints(x[3]) if len(x) > 3 and x[3] is not None else None
            steps = ints(x[4]) if len(x) > 4 and x[4] is not None else None
        axes = axes or list(range(len(starts)))
        steps = steps or [1] * len(starts)
        index = [slice(None)] * x[0].dim()
        y = x[0]
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax %= y.dim()
            dim = y.shape[ax]
            s, e = s + dim if s < 0 else s, e + dim if e < 0 else e
            if st > 0:
                index[ax] = slice(max(0, min(dim, s)), max(0, min(dim, e)), st)
            elif st < 0:  # starts clamp to [0, dim-1], ends to [-1, dim-1]; torch has no negative steps
                picked = list(range(max(0, min(dim - 1, s)), max(-1, min(dim - 1, e)), st))
                y = torch.index_select(y, ax, torch.tensor(picked, dtype=torch.long))
            else:
                raise UnsupportedError(f"to_torch: Slice '{n.name}' with a zero step")
        return y[tuple(index)]

    def split(m, n, a, x, v):
        axis = a.get("axis", 0)
        sizes = ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("split")
        if sizes is None:
            parts = len(n.output)
            size = -(-x[0].shape[axis] // parts)
            sizes = [min(size, x[0].shape[axis] - i * size) for i in range(parts)]
        return list(torch.split(x[0], list(sizes), dim=axis))

    def gather(m, n, a, x, v):
        idx = x[1].long()
        axis = a.get("axis", 0) % x[0].dim()
        idx = torch.where(idx < 0, idx + x[0].shape[axis], idx)
        out = torch.index_select(x[0], axis, idx.reshape(-1))
        return out.reshape(tuple(x[0].shape[:axis]) + tuple(idx.shape) + tuple(x[0].shape[axis + 1:]))

    def cast(m, n, a, x, v):
        from onnx import helper

        return x[0].to(getattr(torch, np.dtype(helper.tensor_dtype_to_np_dtype(a["to"])).name))

    def pad(m, n, a, x, v):
        pads = ints(x[1]) if m.opset >= 11 else a["pads"]
        value = float(x[2]) if m.opset >= 11 and len(x) > 2 and x[2] is not None else a.get("value", 0.0)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        rank = x[0].dim()
        axes = ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(rank))
        half = len(pads) // 2
        axes = [ax % rank for ax in axes]
        if len(axes) != half:
            raise UnsupportedError(f"to_torch: Pad '{n.name}' with {len(pads)} pads for axes {axes}")
        if mode == "constant":
            full = [0] * (2 * rank)
            for i, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[i], pads[i + half]
            flat = []
            for i in reversed(range(rank)):
                flat += [full[i], full[i + rank]]
            return F.pad(x[0], flat, value=value)
        if mode not in ("edge", "reflect", "wrap"):
            raise UnsupportedError(f"to_torch: Pad '{n.name}' with mode={mode}")
        y = x[0]
        for i, ax in enumerate(axes):  # every axis by a gather: edge, reflect and wrap on any axis
            begin, end, dim = pads[i], pads[i + half], y.shape[ax]
            if begin == 0 and end == 0:
                continue
            where = np.arange(-begin, dim + end)
            if mode == "edge":
                where = np.clip(where, 0, dim - 1)
            elif mode == "wrap":
                where = where % dim
            else:
                if dim == 1:
                    where = np.zeros_like(where)
                else:
                    period = 2 * (dim - 1)
                    where = np.abs(where) % period
                    where = np.where(where >= dim, period - where, where)
            y = torch.index_select(y, ax, torch.from_numpy(where.astype(np.int64)))
        return y

    def constant(m, n, a, x, v):
        from onnx import numpy_helper

        if "value" in a:
            return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
        for key in ("value_float", "value_int"):
            if key in a:
                return torch.tensor(a[key])
        for key in ("value_floats", "value_ints"):
            if key in a:
                return torch.tensor(list(a[key]))
        raise UnsupportedError(f"to_torch: Constant '{n.name}' with {sorted(a)}")

    def constant_of_shape(m, n, a, x, v):
        from onnx import numpy_helper

        fill = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        return torch.full(ints(x[0]), fill.reshape(-1)[0].item(), dtype=getattr(torch, fill.dtype.name))

    def one_hot(m, n, a, x, v):
        depth = int(np.asarray(x[1].tolist()).reshape(-1)[0])
        values = x[2].reshape(-1)
        idx = x[0]
        idx = idx.long() if not idx.is_floating_point() else idx.floor().long()  # float indices: cast
        idx = torch.where(idx < 0, idx + depth, idx)
        axis = a.get("axis", -1) % (idx.dim() + 1)
        shape = [1] * (idx.dim() + 1)
        shape[axis] = depth
        hot = idx.unsqueeze(axis) == torch.arange(depth).reshape(shape)
        return torch.where(hot, values[1], values[0])

    def gather_nd(m, n, a, x, v):
        data, idx = x[0], x[1].long()
        b = int(a.get("batch_dims", 0))
        k = idx.shape[-1]
        batch = tuple(data.shape[:b])
        count = int(np.prod(batch, dtype=np.int64))
        middle = tuple(idx.shape[b:-1])
        flat_data = data.reshape((count,) + tuple(data.shape[b:]))
        flat_idx = idx.reshape(count, -1, k)
        sizes = torch.tensor(data.shape[b:b + k])
        flat_idx = torch.where(flat_idx < 0, flat_idx + sizes, flat_idx)
        rows = torch.arange(count).reshape(count, 1)
        picked = flat_data[(rows,) + tuple(flat_idx[..., j] for j in range(k))]
        return picked.reshape(batch + middle + tuple(data.shape[b + k:]))

    def scatter_elements(m, n, a, x, v):
        data, idx, upd = x[0], x[1].long(), x[2]
        axis = a.get("axis", 0) % data.dim()
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        how = as_text(a.get("reduction"), "none")
        if how == "none":
            return data.scatter(axis, idx, upd)
        if how not in ("add", "mul", "max", "min"):
            unsupported(n, f"reduction={how}")
        return data.scatter_reduce(axis, idx, upd, {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[how])

    return {
        "Transpose": lambda m, n, a, x, v: x[0].permute(a.get("perm", list(range(x[0].dim()))[::-1])),
        "Reshape": reshape, "Flatten": flatten, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
        "Concat": lambda m, n, a, x, v: torch.cat(x, dim=a["axis"]), "Split": split, "Slice": slice_,
        "Gather": gather, "Cast": cast, "Pad": pad, "Constant": constant, "ConstantOfShape": constant_of_shape,
        "Shape": lambda m, n, a, x, v: torch.tensor(x[0].shape[a.get("start", 0):a.get("end", None)]),
        "Expand": lambda m, n, a, x, v: x[0] * torch.ones(ints(x[1]), dtype=x[0].dtype),
        "Tile": lambda m, n, a, x, v: x[0].repeat(ints(x[1])),
        "OneHot": one_hot, "GatherND": gather_nd, "ScatterElements": scatter_elements,
    }
