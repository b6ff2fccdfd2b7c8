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
