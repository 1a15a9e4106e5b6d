"""The weighting rules' formulas, row by row."""

from __future__ import annotations

import numpy as np
import pytest

from ppl.models.reasoning.reward_weighting import RewardWeighting, aggregate, log_potentials


def values(rewards_per_step, aggregation):
    v = np.zeros(len(rewards_per_step[0]))
    out = []
    for t, r in enumerate(rewards_per_step, start=1):
        v = aggregate(v, np.asarray(r), np.full(v.shape, t), aggregation)
        out.append(v)
    return out


def test_aggregations():
    steps = [[0.5, 0.9], [0.8, 0.2], [0.4, 0.6]]
    np.testing.assert_allclose(np.exp(values(steps, "product")[-1]), [0.16, 0.108])
    np.testing.assert_allclose(np.exp(values(steps, "min")[-1]), [0.4, 0.2])
    np.testing.assert_allclose(np.exp(values(steps, "last")[-1]), [0.4, 0.6])


@pytest.mark.parametrize("aggregation", ["product", "min", "last"])
def test_bernoulli_increments_telescope_to_the_aggregated_value(aggregation):
    steps = [[0.5, 0.9, 0.3], [0.8, 0.2, 0.3], [0.4, 0.6, 0.9]]
    previous, total = np.zeros(3), np.zeros(3)
    for v in values(steps, aggregation):
        total += log_potentials(RewardWeighting("bernoulli", aggregation), previous, v, True)
        previous = v
    np.testing.assert_allclose(total, previous)


def test_product_increment_is_log_reward_and_absorbed_rows_get_zero():
    weighting = RewardWeighting("bernoulli", "product")
    v0, r = np.log([0.5, 0.5]), np.asarray([0.25, 0.8])
    v1 = aggregate(v0, r, np.asarray([2, 2]), "product")
    out = log_potentials(weighting, v0, v1, np.asarray([True, False]))
    np.testing.assert_allclose(out, [np.log(0.25), 0.0])


def test_zero_reward_kills_and_dead_rows_stay_dead():
    weighting = RewardWeighting("bernoulli", "min")
    v1 = aggregate(np.zeros(1), np.zeros(1), np.ones(1), "min")
    assert log_potentials(weighting, np.zeros(1), v1, True)[0] == -np.inf
    v2 = aggregate(v1, np.ones(1), np.full(1, 2), "min")
    assert log_potentials(weighting, v1, v2, True)[0] == -np.inf


def test_softmax_rule_is_logit_over_temperature_for_every_row():
    weighting = RewardWeighting("softmax", "last", temperature=0.5)
    assert weighting.resample_every_step
    r = np.asarray([0.2, 0.7, 0.9])
    out = log_potentials(weighting, np.zeros(3), np.log(r), np.asarray([True, False, True]))
    np.testing.assert_allclose(out, np.log(r / (1 - r)) / 0.5)


def test_nan_rewards_propagate():
    for rule in ("bernoulli", "softmax"):
        v = aggregate(np.zeros(1), np.asarray([np.nan]), np.ones(1), "product")
        assert np.isnan(log_potentials(RewardWeighting(rule), np.zeros(1), v, True)[0])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="aggregation"):
        RewardWeighting("bernoulli", "mean").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rule"):
        RewardWeighting("power").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        RewardWeighting("softmax", temperature=0).validate()
