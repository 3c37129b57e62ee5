import math

import pytest

from workshop_utils import ExperimentConfig
from workshop_utils.experiments import format_summary, seeds, summarize, train_and_evaluate


def test_summarize_groups_in_first_seen_order():
    rows = [{"recipe": "b", "x": 1.0}, {"recipe": "a", "x": 2.0}, {"recipe": "b", "x": 3.0}]
    summary = summarize(rows, by="recipe", metrics=("x",))
    assert list(summary) == ["b", "a"]
    assert summary["b"]["x"] == (2.0, 1.0) and summary["a"]["x"] == (2.0, 0.0)
    table = format_summary(summary, by="recipe").splitlines()
    assert table[0] == "| recipe | x |" and table[2].startswith("| b | 2 ± 1")


def test_seeds():
    assert [config.seed for config in seeds(ExperimentConfig(), 3)] == [0, 1, 2]


def test_train_and_evaluate_returns_one_honest_row():
    config = ExperimentConfig(neurons=8, input_features=32, batch_size=4, timesteps=200, epochs=2, k=2)
    row = train_and_evaluate(config, steps=2000, chains=4, noise_chains=16)
    assert row["k"] == 2 and len(row["losses"]) == 2
    for key in ("final_loss", "long_run_kl", "noise_floor", "seconds"):
        assert math.isfinite(row[key]) and row[key] >= 0
    assert row["final_loss"] == pytest.approx(row["losses"][-1])
