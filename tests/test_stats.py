"""stats.py: intervals by hand, clustered by prompt, paired differences."""

import math

import pytest

from tokencompose.stats import cluster_interval, mean_interval, paired_interval


def test_mean_interval_normal_by_hand():
    result = mean_interval([0.2, 0.4, 0.6])
    # mean 0.4, sample std 0.2, se 0.2 / sqrt(3) = 0.11547, z(97.5%) = 1.959964 -> half width 0.226318
    assert result.mean == pytest.approx(0.4)
    assert result.low == pytest.approx(0.4 - 0.226318, abs=1e-6)
    assert result.high == pytest.approx(0.4 + 0.226318, abs=1e-6)
    assert result.n == 3 and result.method == "normal"


def test_mean_interval_bootstrap_and_edge_cases():
    constant = mean_interval([0.5] * 10, method="bootstrap")
    assert (constant.low, constant.high) == (0.5, 0.5)
    spread = mean_interval([0.0, 1.0] * 20, method="bootstrap", seed=1)
    assert 0.0 < spread.low < 0.5 < spread.high < 1.0
    single = mean_interval([0.7])
    assert single.mean == 0.7 and math.isnan(single.low) and math.isnan(single.high)
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
    with pytest.raises(ValueError, match="method"):
        mean_interval([0.1, 0.2], method="t")


def test_cluster_interval_is_over_prompts():
    stat = cluster_interval([[1, 1], [0, 0], [1, 0], [1, 0]])
    assert stat["mean"] == pytest.approx(50.0) and stat["prompts"] == 4
    # per-prompt means 100, 0, 50, 50: sample std 40.82, half-width 1.96 * 40.82 / 2
    assert stat["high"] - stat["mean"] == pytest.approx(1.959964 * 40.8248 / 2, rel=1e-3)
    assert math.isnan(cluster_interval([[1, 0]])["low"])


def test_paired_interval_removes_the_prompt_variance():
    easy_hard = [[1, 1], [0, 0], [1, 1], [0, 0]]  # prompts differ a lot
    better = [[1, 1], [1, 0], [1, 1], [1, 0]]      # +50 on the hard prompts, the same on the easy ones
    paired = paired_interval(better, easy_hard)
    assert paired["mean"] == pytest.approx(25.0) and paired["prompts"] == 4
    # differences 0, 50, 0, 50: sample std 28.87, half-width 1.96 * 28.87 / 2
    assert paired["high"] - paired["mean"] == pytest.approx(1.959964 * 28.8675 / 2, rel=1e-3)
    # narrower than comparing two independent intervals: sqrt(h_a^2 + h_b^2)
    half = [cluster_interval(rows)["high"] - cluster_interval(rows)["mean"] for rows in (better, easy_hard)]
    assert paired["high"] - paired["mean"] < math.hypot(*half)
    with pytest.raises(ValueError, match="prompt for prompt"):
        paired_interval(better, easy_hard[:3])


def test_intervals_stay_within_the_possible_range():
    # 3 prompts, two always right and one never: the normal approximation alone reaches past 100 %
    rows = [[1, 1], [1, 1], [0, 0]]
    stat = cluster_interval(rows)
    assert stat["high"] == 100.0 and stat["low"] >= 0.0 and stat["mean"] == 100 * 2 / 3
    low = cluster_interval([[0, 0], [0, 0], [1, 1]])
    assert low["low"] == 0.0 and low["high"] <= 100.0
    paired = paired_interval([[1], [1], [0]], [[0], [0], [1]])
    assert paired["high"] <= 100.0 and paired["low"] >= -100.0
