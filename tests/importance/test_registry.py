"""The criteria and statistics-source registries: one place owns every name, and a criterion
defined in one file (here, this test) prunes through spa.prune with no other edit."""
import numpy as np
import pytest

import spa
from spa.importance.criteria import WeightCriterion
from spa.importance.registry import (Criterion, criteria, criterion_names, get_criterion, register_criterion,
                                     unregister_criterion)
from spa.statistics.sources import get_statistics_source, statistics_source_names
from tests.graphs import conv_relu_conv


class LastChannelsFirst(WeightCriterion):
    """A toy: a channel's score is its index, so the lowest-numbered channels go first."""
    name, summary = "toy_index", "channel index (test only)"

    def group_scores(self, group, model, scoring):
        return np.arange(group.width, dtype=np.float64)


@pytest.fixture
def toy():
    register_criterion(LastChannelsFirst)
    yield get_criterion("toy_index")
    unregister_criterion("toy_index")


def test_a_criterion_registered_in_one_file_prunes_through_the_api(toy):
    assert "toy_index" in criterion_names("weights")
    result = spa.prune(conv_relu_conv(), 0.25, criterion="toy_index", verify=True)
    assert result.plan.meta["criterion"] == "toy_index"
    assert [v for v in result.plan.removed.values() if v] == [[0, 1]]  # 25% of 8: the two lowest indices
    assert result.oracle.holds()
    assert result.after["params"] < result.before["params"]


def test_a_criterion_object_is_accepted_as_it_is():
    class Reversed(WeightCriterion):
        name = "toy_reversed"

        def group_scores(self, group, model, scoring):
            return -np.arange(group.width, dtype=np.float64)

    result = spa.prune(conv_relu_conv(), 0.25, criterion=Reversed())
    assert [v for v in result.plan.removed.values() if v] == [[6, 7]]
    assert "toy_reversed" not in criterion_names()  # used, not registered


def test_unknown_criterion_lists_every_registered_name():
    with pytest.raises(spa.SpaError) as error:
        spa.prune(conv_relu_conv(), 0.25, criterion="nope")
    for name in ("l2", "bn_scale", "obspa", "flap", "taylor", "crop"):
        assert name in str(error.value)
    assert str(error.value).count(",") == len(criterion_names()) - 1


def test_each_criterion_says_what_it_needs():
    kinds = {c.name: c.kind for c in criteria()}
    assert kinds["l2"] == "weights" and kinds["wanda"] == "statistics" and kinds["snip"] == "gradient"
    assert [c.name for c in criteria() if c.comparable] == ["obspa"]
    assert {c.name: c.compensation for c in criteria("statistics")} == {"obspa": "obs", "wanda": "none", "flap": "flap"}
    assert [c.name for c in criteria() if c.takes_p] == ["lp"]
    assert get_criterion("obspa").default_normalizer(global_rank=True) == "none"
    assert get_criterion("obspa").default_normalizer(global_rank=False) == "mean"


def test_registration_refuses_a_taken_name_and_a_bad_kind():
    class Clash(WeightCriterion):
        name = "l2"

    class Odd(Criterion):
        name, kind = "toy_odd", "vibes"

    with pytest.raises(ValueError, match="already registered"):
        register_criterion(Clash)
    with pytest.raises(ValueError, match="kind"):
        register_criterion(Odd)
    assert type(get_criterion("l2")).__name__ == "L2"


def test_kinds_and_defaults_come_from_the_criteria():
    from spa.statistics.sources import feed_source_names

    assert {c.name: c.compensation for c in criteria("statistics")} == {"obspa": "obs", "wanda": "none", "flap": "flap"}
    assert criterion_names("gradient") == ("taylor", "snip", "grasp", "crop")
    assert [c.name for c in criteria() if c.comparable] == ["obspa"]
    assert feed_source_names() == ("synthetic", "data")


def test_cli_choices_are_the_registries():
    from spa.cli import args
    from spa.exporters.registry import exporter_names
    from spa.importance.combine import NORMALIZERS, REDUCTIONS

    assert tuple(args.CRITERIA) == ("auto", *criterion_names())
    assert tuple(args.STATISTICS_SOURCES) == statistics_source_names()
    assert list(args.EXPORT_FRAMEWORKS) == exporter_names()
    assert (tuple(args.NORMALIZERS), tuple(args.REDUCTIONS)) == (NORMALIZERS, REDUCTIONS)


def test_statistics_sources_say_what_they_need_and_yield():
    assert statistics_source_names() == ("auto", "synthetic", "bn", "weights", "data")
    assert [n for n in statistics_source_names() if get_statistics_source(n).needs_data] == ["data"]
    assert [n for n in statistics_source_names() if get_statistics_source(n).yields_feeds] == ["auto", "synthetic", "data"]
    with pytest.raises(spa.SpaError, match="unknown statistics source 'calibration' .*auto, synthetic, bn, weights, data"):
        get_statistics_source("calibration")


def test_the_compensation_policy():
    from spa.flow.pipeline import Compensation, compensation_for

    assert compensation_for("l2") is None
    assert compensation_for("flap").method == "flap"
    assert compensation_for("wanda").method == "none"
    assert compensation_for("taylor").method == "none"
    assert compensation_for("l2", obs=True).method == "obs"
    asked = compensation_for("wanda", sequential=3, statistics="data", calib="c.npz", samples=8, seed=2)
    assert (asked.method, asked.sequential, asked.stages, asked.statistics, asked.calib, asked.samples, asked.seed) == \
        ("obs", True, 3, "data", "c.npz", 8, 2)
    assert compensation_for("l2", sequential=0).stages is None  # one statistics pass per sink
    assert compensation_for("l2", greedy=True).greedy
    assert Compensation(hessian="bn").statistics == "bn"  # the older keyword still works
