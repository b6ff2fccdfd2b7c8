"""BatchNorm-statistics-matched synthetic inputs (ZeroQ-style)."""
from __future__ import annotations

import numpy as np
from spa.statistics import synthesis as distill

from tests.graphs import GraphBuilder


def bn_net(with_bn: bool = True, shape=(1, 3, 16, 16)):
    b = GraphBuilder(seed=0)
    x = b.input("image", list(shape))
    y = b.conv(x, 3, 6, k=3)
    if with_bn:
        r = np.random.default_rng(1)
        y = b.batchnorm(y, np.ones(6), np.zeros(6), r.normal(0, 1, 6), r.uniform(0.5, 4, 6))
    y = b.op("Relu", [y])
    y = b.conv(y, 6, 4, k=3)
    if with_bn:
        r = np.random.default_rng(2)
        y = b.batchnorm(y, np.ones(4), np.zeros(4), r.normal(0, 1, 4), r.uniform(0.5, 4, 4))
    out = b.op("Flatten", [b.op("GlobalAveragePool", [y])])
    b.output(out)
    return b.model()


def calibrated(model):
    """The BNs' running statistics set to those of a reference input distribution (per-channel
    offsets and scales, as a normalised photo has), so that the loss can reach ~0."""
    import onnx_ir as ir
    import torch

    rng = np.random.default_rng(5)
    x = torch.from_numpy((rng.normal(size=(32, 3, 16, 16)) * [[[[2.0]], [[0.5]], [[1.0]]]]
                          + [[[[0.5]], [[-1.0]], [[0.0]]]]).astype(np.float32))
    for bn in [n for n in model.graph if n.op_type == "BatchNormalization"]:  # in order: each sees the ones before
        module, names, _ = distill.bn_loss_module(model)
        with torch.no_grad():
            outs = dict(zip(names, module(x)))
        a = outs[bn.inputs[0].name].numpy()
        for index, stat in ((3, a.mean(axis=(0, 2, 3))), (4, a.var(axis=(0, 2, 3)))):
            v = bn.inputs[index]
            v.const_value = ir.tensor(stat.astype(np.float32), name=v.name)
    return model


def test_feeds_match_the_batchnorm_statistics_and_fit_the_input():
    model = calibrated(bn_net())
    history = []
    feeds = distill.bn_matched_feeds(model, 10, seed=0, steps=40, images=4, lr=0.1, history=history)
    assert history[-1] < 0.1 * history[0]
    assert len(feeds) == 10
    for feed in feeds:
        assert list(feed) == ["image"]
        assert feed["image"].shape == (1, 3, 16, 16) and feed["image"].dtype == np.float32
    # the first BN's input statistics over the feeds approach its running statistics
    import torch

    module, names, targets = distill.bn_loss_module(model)
    x = torch.from_numpy(np.concatenate([f["image"] for f in feeds]))
    with torch.no_grad():
        assert float(distill.bn_loss(module, names, targets, x)) < 0.3 * history[0]


def test_feeds_are_deterministic_per_seed():
    model = bn_net()
    a = distill.bn_matched_feeds(model, 6, seed=3, steps=5, images=3)
    b = distill.bn_matched_feeds(model, 6, seed=3, steps=5, images=3)
    c = distill.bn_matched_feeds(model, 6, seed=4, steps=5, images=3)
    assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_no_batchnorm_or_no_image_input_gives_none():
    assert distill.bn_matched_feeds(bn_net(with_bn=False), 4) is None
    b = GraphBuilder(seed=0)
    x = b.input("x", [1, 8])
    y = b.op("Gemm", [x, b.weight((4, 8)), b.weight((4,))], transB=1)
    y = b.batchnorm(y, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))
    b.output(y)
    assert distill.bn_matched_feeds(b.model(), 4) is None


def test_the_pipeline_uses_them_for_synthetic_statistics():
    from spa.statistics.sources import statistics_feeds

    model = bn_net()
    feeds = statistics_feeds(model, "synthetic", samples=3, seed=0, bn_model=model)
    assert len(feeds) == 3 and feeds[0]["image"].shape == (1, 3, 16, 16)
    history = []
    distill.bn_matched_feeds(model, 3, seed=0, history=history)
    noise = next(iter(__import__("spa.statistics.hessian", fromlist=["x"]).synthetic_feeds(model, 1, 0)))
    assert not np.array_equal(noise["image"], feeds[0]["image"])


def test_images_too_large_to_optimise_on_a_cpu_are_left_to_plain_noise(monkeypatch):
    """Above MAX_PIXELS no image is optimised (the caller makes 1/f-noise images instead)."""
    model = bn_net()  # 16×16 images
    assert distill.bn_matched_feeds(model, 2, steps=1) is not None
    monkeypatch.setattr(distill, "MAX_PIXELS", 255)
    assert distill.bn_matched_feeds(model, 2, steps=1) is None


def test_larger_images_are_optimised_fewer_at_a_time(monkeypatch):
    """At most PIXELS are optimised together; the other feeds are shifted copies of those."""
    model = bn_net()
    monkeypatch.setattr(distill, "PIXELS", 2 * 256)  # two 16×16 images
    feeds = distill.bn_matched_feeds(model, 6, seed=0, steps=1)
    distinct = {tuple(np.sort(f["image"].ravel())[:50]) for f in feeds}  # shifts/mirrors keep the values
    assert len(feeds) == 6 and len(distinct) == 2
