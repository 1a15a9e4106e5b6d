"""From verifier rewards r_t in (0, 1) to the log potentials of a particle filter.

A process verifier scores every reasoning step x_t of a prefix x_{1:t} with r_t. Step rewards
aggregate into one value per prefix, kept in log space (v_0 = 0 before the first step):

    product:  v_t = Σ_{s<=t} log r_s
    min:      v_t = min_{s<=t} log r_s
    last:     v_t = log r_t   (also the rule for a verifier that scores the whole prefix)

Two weighting rules turn values into incremental log weights log G_t:

- `bernoulli`: each step emits an observation o_t = 1 with probability given by the
  aggregated reward, and the particle filter targets p(x_{1:t}) exp(v_t). The exact
  incremental weight is the ratio of consecutive targets, log G_t = v_t - v_{t-1}; with the
  `product` aggregation that is log r_t (the Bernoulli observation model of Puri et al.).
  Absorbed (finished) rows get log G_t = 0 and keep their weights.
- `softmax`: Puri et al.'s resampling rule, weights softmax(logit(R_t) / tau) over particles
  with R_t = exp(v_t) the aggregated reward of the whole prefix, i.e.
  log G_t = logit(R_t) / tau for every row, finished ones included (they keep competing with
  their final reward). The weights are not a product over steps, so this rule resamples at
  every step (`resample_every_step`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

Aggregation = Literal["product", "min", "last"]
Rule = Literal["bernoulli", "softmax"]
AGGREGATIONS: tuple[str, ...] = ("product", "min", "last")
RULES: tuple[str, ...] = ("bernoulli", "softmax")
_CLIP = 1e-6  # rewards are clipped into [_CLIP, 1 - _CLIP] before logit


class RewardWeighting(NamedTuple):
    rule: Rule = "bernoulli"
    aggregation: Aggregation = "product"
    temperature: float = 1.0  # tau of the softmax rule

    def validate(self) -> RewardWeighting:
        if self.rule not in RULES:
            raise ValueError(f"unknown weighting rule {self.rule!r}; choose from {RULES}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; choose from {AGGREGATIONS}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        return self

    @property
    def resample_every_step(self) -> bool:
        return self.rule == "softmax"


def aggregate(
    log_values: np.ndarray, rewards: np.ndarray, num_steps: np.ndarray, aggregation: Aggregation
) -> np.ndarray:
    """v_t from v_{t-1} (`log_values`) and this step's rewards r_t; `num_steps` is t (>= 1).

    Rewards are clipped to [0, 1]; r = 0 gives v = -inf, NaN stays NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rewards = np.log(np.clip(np.asarray(rewards, np.float64), 0.0, 1.0))
        if aggregation == "product":
            return log_values + log_rewards
        if aggregation == "min":
            first = np.asarray(num_steps) <= 1
            return np.where(first, log_rewards, np.minimum(log_values, log_rewards))
        if aggregation == "last":
            return log_rewards
    raise ValueError(f"unknown aggregation {aggregation!r}; choose from {AGGREGATIONS}")


def log_potentials(
    weighting: RewardWeighting,
    previous_log_values: np.ndarray,
    log_values: np.ndarray,
    moved: np.ndarray,
) -> np.ndarray:
    """log G_t per row; `moved` marks the rows that took a step (the others were absorbed)."""
    previous_log_values = np.asarray(previous_log_values, np.float64)
    log_values = np.asarray(log_values, np.float64)
    if weighting.rule == "bernoulli":
        with np.errstate(invalid="ignore"):
            increment = log_values - previous_log_values
        # -inf - (-inf) only arises for a row that was already dead: keep it dead
        increment = np.where(np.isneginf(log_values), -np.inf, increment)
        return np.where(moved, increment, 0.0)
    if weighting.rule == "softmax":
        reward = np.clip(np.exp(log_values), _CLIP, 1 - _CLIP)
        reward = np.where(np.isnan(log_values), np.nan, reward)
        return (np.log(reward) - np.log1p(-reward)) / weighting.temperature
    raise ValueError(f"unknown weighting rule {weighting.rule!r}; choose from {RULES}")
