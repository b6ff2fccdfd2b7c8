"""im2col for compensation statistics on 1-D, 2-D and 3-D convolutions: its columns times the weight
matrix must equal torch's convolution (strides, dilations, asymmetric pads), and a window of
positions reads a subset of the whole map's columns."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spa.statistics.hessian import conv_columns

CASES = [
    ([2, 3, 17], [3], [2], [1], [1, 1]),
    ([1, 4, 9], [5], [1], [2], [2, 3]),
    ([2, 3, 11, 9], [3, 3], [2, 1], [1, 2], [1, 0, 2, 1]),
    ([1, 2, 5, 6, 7], [3, 2, 3], [1, 2, 1], [1, 1, 2], [1, 0, 1, 1, 1, 0]),
]


def _geometry(kernel, strides, dilations, pads):
    return {"kernel": kernel, "strides": strides, "dilations": dilations, "pads": pads}


def _torch_conv(x, w, strides, dilations, pads):
    spatial = x.ndim - 2
    torch_pads = [p for i in reversed(range(spatial)) for p in (pads[i], pads[i + spatial])]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    out = conv(F.pad(torch.from_numpy(x), torch_pads), torch.from_numpy(w), stride=strides, dilation=dilations)
    return np.moveaxis(out.numpy(), 1, -1).reshape(-1, w.shape[0])


@pytest.mark.parametrize("dims,kernel,strides,dilations,pads", CASES)
def test_im2col_times_weights_is_the_convolution(dims, kernel, strides, dilations, pads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(np.float32)
    w = rng.standard_normal([5, dims[1]] + kernel).astype(np.float32)
    cols = conv_columns(x, _geometry(kernel, strides, dilations, pads))
    np.testing.assert_allclose(cols @ w.reshape(5, -1).T, _torch_conv(x, w, strides, dilations, pads), atol=1e-4)


@pytest.mark.parametrize("dims,kernel,strides,dilations,pads", CASES)
def test_a_window_of_positions_reads_the_same_columns_as_the_whole_map(dims, kernel, strides, dilations, pads):
    x = np.random.default_rng(2).standard_normal(dims).astype(np.float32)
    g = _geometry(kernel, strides, dilations, pads)
    full = conv_columns(x, g)
    window = conv_columns(x, g, rows=3, rng=np.random.default_rng(1))
    assert 1 <= len(window) < len(full)
    assert {r.tobytes() for r in window} <= {r.tobytes() for r in full}
    np.testing.assert_array_equal(conv_columns(x, g, rows=10**6, rng=np.random.default_rng(1)), full)
