"""Weight criteria at group level: each returns one non-negative score per root channel, and each
ranks by the property it is defined by (checked against numbers computed here from the weights)."""
import numpy as np
import pytest

from spa.analysis.groups import analyze
from spa.graph.canon import canonicalize
from spa.importance.criteria import group_importance, lamp
from spa.importance.registry import criterion_names
from tests.graphs import GraphBuilder


def conv_bn_conv(weight=None, gamma=None):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    w = b.weight((4, 3, 3, 3), "w_first", weight)
    h = b.op("Conv", [x, w], pads=[1, 1, 1, 1])
    g = b.weight((4,), "gamma", gamma if gamma is not None else np.array([1.0, -3.0, 0.5, 2.0], np.float32))
    h = b.op("BatchNormalization", [h, g, b.weight((4,)), b.weight(None, "mean", np.zeros(4, np.float32)),
                                    b.weight(None, "var", np.ones(4, np.float32))])
    b.output(b.op("Conv", [b.op("Relu", [h]), b.weight((2, 4, 1, 1), "w_next")]))
    model = canonicalize(b.model(), fuse_batchnorm=False)
    [group] = analyze(model).prunable_groups()
    return model, group


@pytest.mark.parametrize("criterion", criterion_names("weights"))
def test_every_criterion_gives_one_non_negative_score_per_channel(criterion):
    model, group = conv_bn_conv()
    scores = group_importance(group, model, criterion, p=3.0)
    assert scores.shape == (group.width,) and (scores >= 0).all() and np.isfinite(scores).all()


def test_lamp_is_each_channels_share_of_the_mass_at_or_above_it():
    s = np.array([4.0, 1.0, 9.0, 2.0])
    assert np.allclose(lamp(s), [4 / 13, 1 / 16, 1.0, 2 / 15])


def test_fpgm_scores_filters_near_the_median_lowest():
    w = np.zeros((4, 3, 3, 3), np.float32)
    w[0] = w[1] = w[2] = 1.0  # three equal filters: the geometric median
    w[3] = -0.5               # small, but unlike the others: magnitude would drop it first
    model, group = conv_bn_conv(weight=w)
    scores = group_importance(group, model, "fpgm", normalizer="none", reduction="max")
    first = next(m for m in group.params if m.value == "w_first")
    assert np.argmax(scores) == first.pos2class[3]
    assert np.argmin(group_importance(group, model, "l2", normalizer="none", reduction="max")) == first.pos2class[3]


def test_bn_scale_ranks_by_gamma_magnitude():
    gamma = np.array([1.0, -3.0, 0.5, 2.0], np.float32)
    model, group = conv_bn_conv(gamma=gamma)
    scores = group_importance(group, model, "bn_scale", normalizer="none")
    member = next(m for m in group.params if m.value == "gamma")
    expected = np.zeros(group.width)
    np.add.at(expected, member.pos2class, np.abs(gamma))
    assert np.allclose(scores, expected)
