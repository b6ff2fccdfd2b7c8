"""im2col for compensation statistics on 1-D and 3-D convolutions: its columns times the weight
matrix must equal torch's convolution (strides, dilations, asymmetric pads)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spa.passes.compensate.hessian import _im2col


@pytest.mark.parametrize("dims,kernel,strides,dilations,pads", [
    ([2, 3, 17], [3], [2], [1], [1, 1]),
    ([1, 4, 9], [5], [1], [2], [2, 3]),
    ([1, 2, 5, 6, 7], [3, 2, 3], [1, 2, 1], [1, 1, 2], [1, 0, 1, 1, 1, 0]),
])
def test_im2col_times_weights_is_the_convolution(dims, kernel, strides, dilations, pads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(dims).astype(np.float32)
    w = rng.standard_normal([5, dims[1]] + kernel).astype(np.float32)
    spatial = len(kernel)
    cols = _im2col(x, {"kernel": kernel, "strides": strides, "dilations": dilations, "pads": pads})
    torch_pads = [p for i in reversed(range(spatial)) for p in (pads[i], pads[i + spatial])]
    conv = {1: F.conv1d, 3: F.conv3d}[spatial]
    want = conv(F.pad(torch.from_numpy(x), torch_pads), torch.from_numpy(w), stride=strides, dilation=dilations)
    want = np.moveaxis(want.numpy(), 1, -1).reshape(-1, 5)
    np.testing.assert_allclose(cols @ w.reshape(5, -1).T, want, atol=1e-4)


@pytest.mark.parametrize("pads,strides", [([1, 1, 1, 1], [1, 1]), ([0, 1, 2, 0], [2, 2])])
def test_a_window_of_positions_reads_the_same_columns_as_the_whole_map(pads, strides):
    from spa.passes.compensate.hessian import _window

    g = {"kernel": [3, 3], "strides": strides, "dilations": [1, 1], "pads": pads}
    x = torch.randn(1, 4, 23, 19)
    def columns(t):
        return F.unfold(t, [3, 3], stride=strides).transpose(1, 2)[0].numpy()
    full = columns(F.pad(x, (pads[1], pads[3], pads[0], pads[2])))
    window = columns(_window(x, g, 20, np.random.default_rng(1)))
    assert 10 <= len(window) <= 40
    assert {r.tobytes() for r in window} <= {r.tobytes() for r in full}
    np.testing.assert_array_equal(columns(_window(x, g, 10**6, np.random.default_rng(1))), full)
