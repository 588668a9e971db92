"""Learning-rate schedules: `config.optimizer.learning_rate` is the peak under every schedule, and
the LRA configs still follow LRA's rsqrt schedule with its constant 0.05."""

import numpy as np
import pytest

from configs import base, listops, retrieval, text
from research.training.optim import SCHEDULES, OptimizerConfig, learning_rate_schedule


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 1, 10, 300])
def test_every_schedule_peaks_at_the_configured_learning_rate(schedule, warmup):
    optimizer = base.get_config().optimizer
    optimizer.update(schedule=schedule, learning_rate=3e-4, warmup_steps=warmup)
    rates = learning_rate_schedule(OptimizerConfig.from_config(optimizer), 1_000)(np.arange(1_001))
    np.testing.assert_allclose(np.max(rates), 3e-4, rtol=1e-6)
    assert np.all(rates >= 0)


@pytest.mark.parametrize(
    "config, constant, warmup",
    [
        (listops.get_config(), 0.05, 1_000),
        (text.get_config(), 0.05, 8_000),
        (retrieval.get_config(), 0.05, 8_000),
    ],
)
def test_lra_configs_follow_lras_rsqrt_formula(config, constant, warmup):
    """LRA: constant * min(1, s/w) / sqrt(max(s, w)) (lra_benchmarks/utils/train_utils.py)."""
    assert config.optimizer.schedule == "rsqrt" and config.optimizer.warmup_steps == warmup
    optimizer = OptimizerConfig.from_config(config.optimizer)
    schedule = learning_rate_schedule(optimizer, config.num_train_steps)
    steps = np.array([0, 1, 100, warmup // 2, warmup - 1, warmup, warmup + 1, 3 * warmup, 20_000])
    lra = constant * np.minimum(1.0, steps / warmup) / np.sqrt(np.maximum(steps, warmup))
    np.testing.assert_allclose(schedule(steps), lra, rtol=1e-6, atol=1e-12)
