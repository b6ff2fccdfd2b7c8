"""to_torch op table: Resize and Upsample, resampled axis by axis in ONNX Runtime's float32 arithmetic."""
from __future__ import annotations

import numpy as np

from spa.runtime.torch_ops_common import as_text, ints, optional, unsupported


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""
    def resize(m, n, a, x, v):
        data = x[0]
        rank = data.dim()
        if m.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
            scales, sizes, roi = optional(x, 1), None, None
            ctm, nearest = "asymmetric", "simple"
        else:
            roi, scales, sizes = optional(x, 1), optional(x, 2), optional(x, 3)
            ctm = as_text(a.get("coordinate_transformation_mode"), "half_pixel")
            nearest = as_text(a.get("nearest_mode"), "round_prefer_floor")
        mode = as_text(a.get("mode"), "nearest")
        antialias = bool(a.get("antialias", 0)) and mode != "nearest"
        axes = [int(i) % rank for i in a.get("axes", range(rank))]
        policy = as_text(a.get("keep_aspect_ratio_policy"), "stretch")
        full_scales, full_sizes = [1.0] * rank, [int(d) for d in data.shape]
        if sizes is not None and sizes.numel():
            given = ints(sizes)
            if policy == "stretch":
                for ax, size in zip(axes, given):
                    full_sizes[ax] = size
                    full_scales[ax] = float(np.float32(size) / np.float32(data.shape[ax]))
            elif policy in ("not_larger", "not_smaller"):
                ratios = [np.float32(size) / np.float32(data.shape[ax]) for ax, size in zip(axes, given)]
                scale = min(ratios) if policy == "not_larger" else max(ratios)
                for ax in axes:
                    full_sizes[ax] = int(np.floor(scale * np.float32(data.shape[ax]) + np.float32(0.5)))
                    full_scales[ax] = float(scale)
            else:
                unsupported(n, f"keep_aspect_ratio_policy={policy}")
        elif scales is not None and scales.numel():
            given = [float(s) for s in np.asarray(scales.tolist(), np.float32).reshape(-1)]
            for ax, scale in zip(axes, given):
                if scale <= 0:
                    unsupported(n, f"scale {scale}")
                full_scales[ax] = scale
                length = np.float32(data.shape[ax]) * np.float32(scale)
                if ctm == "tf_crop_and_resize" and roi is not None and roi.numel():
                    r = np.asarray(roi.tolist(), np.float32).reshape(-1)
                    i = axes.index(ax)
                    length = length * (r[i + len(axes)] - r[i])
                full_sizes[ax] = int(np.floor(length))
        else:
            unsupported(n, "neither scales nor sizes")
        full_roi = None
        if ctm == "tf_crop_and_resize":
            if roi is None or not roi.numel():
                unsupported(n, "coordinate_transformation_mode=tf_crop_and_resize and no roi")
            r = [float(t) for t in np.asarray(roi.tolist(), np.float32).reshape(-1)]
            full_roi = [0.0] * rank + [1.0] * rank
            for i, ax in enumerate(axes):
                full_roi[ax], full_roi[ax + rank] = r[i], r[i + len(axes)]
        if antialias and any(s < 1 for s in full_scales):
            unsupported(n, "antialias=1 when downscaling")
        return _resize(torch, n, data, full_sizes, full_scales, mode, ctm, nearest, a.get("cubic_coeff_a", -0.75),
                       bool(a.get("exclude_outside", 0)), full_roi, a.get("extrapolation_value", 0.0))

    def upsample(m, n, a, x, v):
        scales = a["scales"] if "scales" in a else [float(s) for s in np.asarray(x[1].tolist()).reshape(-1)]
        mode = as_text(a.get("mode"), "nearest")
        mode = "linear" if mode == "bilinear" else mode
        sizes = [int(np.floor(np.float32(d) * np.float32(s))) for d, s in zip(x[0].shape, scales)]
        return _resize(torch, n, x[0], sizes, list(scales), mode, "asymmetric", "simple")

    return {
        "Resize": resize, "Upsample": upsample,
    }


def _resize_axis_weights(n, in_len: int, out_len: int, scale, mode: str, ctm: str, nearest: str, cubic_a: float,
                         exclude_outside: bool, roi: tuple):
    """(indices [out, taps] int64, weights [out, taps] float32, outside [out] bool or None) for one axis,
    computed in float32 with ONNX Runtime's order of operations."""
    f32 = np.float32
    x = np.arange(out_len, dtype=f32)
    scale = f32(scale)
    if ctm == "half_pixel":
        orig = (x + f32(0.5)) / scale - f32(0.5)
    elif ctm == "pytorch_half_pixel":
        orig = (x + f32(0.5)) / scale - f32(0.5) if out_len > 1 else np.zeros_like(x)
    elif ctm == "align_corners":
        orig = x * f32(in_len - 1) / f32(out_len - 1) if out_len > 1 else np.zeros_like(x)
    elif ctm == "asymmetric":
        orig = x / scale
    elif ctm == "half_pixel_symmetric":
        width = scale * f32(in_len)
        offset = f32(in_len) / f32(2) * (f32(1) - f32(out_len) / width)
        orig = offset + (x + f32(0.5)) / scale - f32(0.5)
    elif ctm == "tf_crop_and_resize":
        start, end = f32(roi[0]), f32(roi[1])
        if out_len > 1:
            orig = start * f32(in_len - 1) + x * (end - start) * f32(in_len - 1) / f32(out_len - 1)
        else:
            orig = np.full_like(x, f32(0.5) * (start + end) * f32(in_len - 1))
    else:
        unsupported(n, f"coordinate_transformation_mode={ctm}")
    orig = orig.astype(f32)
    outside = (orig < 0) | (orig > in_len - 1) if ctm == "tf_crop_and_resize" else None
    if mode == "nearest":
        if nearest == "round_prefer_floor":
            idx = np.where(orig - np.floor(orig) == f32(0.5), np.floor(orig), np.floor(orig + f32(0.5)))
        elif nearest == "round_prefer_ceil":
            idx = np.floor(orig + f32(0.5))
        elif nearest == "floor":
            idx = np.floor(orig)
        elif nearest == "ceil":
            idx = np.ceil(orig)
        elif nearest == "simple":  # Resize-10 and Upsample: truncation up, ceiling down
            idx = np.ceil(orig) if scale < 1 else np.trunc(orig)
        else:
            unsupported(n, f"nearest_mode={nearest}")
        idx = np.clip(idx, 0, in_len - 1).astype(np.int64)[:, None]
        return idx, np.ones(idx.shape, f32), outside
    base = np.floor(orig)
    ratio = (orig - base).astype(f32)
    base = base.astype(np.int64)
    if mode == "linear":
        clamped = np.clip(orig, 0, in_len - 1)
        base = np.minimum(np.floor(clamped).astype(np.int64), in_len - 1)
        ratio = (clamped - base).astype(f32)
        idx = np.stack([base, base + 1], 1)
        weights = np.stack([f32(1) - ratio, ratio], 1)
    elif mode == "cubic":
        a = f32(cubic_a)

        def kernel(d):
            d = np.abs(d)
            near = ((a + 2) * d - (a + 3)) * d * d + 1
            far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            return np.where(d <= 1, near, np.where(d < 2, far, f32(0))).astype(f32)

        idx = np.stack([base - 1, base, base + 1, base + 2], 1)
        weights = np.stack([kernel(ratio + 1), kernel(ratio), kernel(f32(1) - ratio), kernel(f32(2) - ratio)], 1)
        if exclude_outside:
            weights = np.where((idx < 0) | (idx > in_len - 1), f32(0), weights)
            weights = weights / weights.sum(1, keepdims=True)
    else:
        unsupported(n, f"mode={mode}")
    return np.clip(idx, 0, in_len - 1), weights.astype(f32), outside


def _resize(torch, n, x, out_sizes: list[int], scales: list[float], mode: str, ctm: str, nearest: str,
            cubic_a: float = -0.75, exclude_outside: bool = False, roi=None, extrapolation: float = 0.0):
    """Separable resampling of every axis whose size, scale or region changes."""
    if mode != "nearest" and not x.is_floating_point():
        unsupported(n, f"mode={mode} on {x.dtype} input")
    y = x
    for axis in range(x.dim()):
        in_len, out_len = int(x.shape[axis]), int(out_sizes[axis])
        region = (float(roi[axis]), float(roi[axis + x.dim()])) if roi is not None else (0.0, 1.0)
        if in_len == out_len and float(scales[axis]) == 1.0 and (ctm != "tf_crop_and_resize"
                                                                   or region == (0.0, 1.0)):
            continue
        if in_len == 0 or out_len == 0:
            unsupported(n, f"an empty axis {axis}")
        idx, weights, outside = _resize_axis_weights(n, in_len, out_len, scales[axis], mode, ctm, nearest,
                                                     cubic_a, exclude_outside, region)
        shape = [1] * y.dim()
        shape[axis] = out_len
        out = None
        for k in range(idx.shape[1]):
            tap = torch.index_select(y, axis, torch.from_numpy(idx[:, k].copy()))
            if mode != "nearest":
                tap = tap * torch.from_numpy(weights[:, k].copy()).to(y.dtype).reshape(shape)
            out = tap if out is None else out + tap
        if outside is not None and outside.any():
            mask = torch.from_numpy(outside).reshape(shape)
            out = torch.where(mask, torch.tensor(extrapolation, dtype=out.dtype), out)
        y = out
    return y
