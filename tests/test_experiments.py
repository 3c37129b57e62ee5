import math

import pytest

from workshop_utils import ExperimentConfig
from workshop_utils.experiments import format_summary, mean_std, seeds, summarize, train_and_evaluate


def test_summarize_groups_in_first_seen_order():
    rows = [{"recipe": "b", "x": 1.0}, {"recipe": "a", "x": 2.0}, {"recipe": "b", "x": 3.0}]
    summary = summarize(rows, by="recipe", metrics=("x",))
    assert list(summary) == ["b", "a"]
    # sample standard deviation over the rows of a group (ddof=1); 0 for a group of one
    assert summary["b"]["x"] == (2.0, pytest.approx(math.sqrt(2))) and summary["a"]["x"] == (2.0, 0.0)
    assert summarize(rows, by="recipe", metrics=("x",), ddof=0)["b"]["x"] == (2.0, 1.0)
    table = format_summary(summary, by="recipe").splitlines()
    assert table[0] == "| recipe | x |" and table[2].startswith("| b | 2 ± 1.4")


def test_mean_std_of_rows():
    rows = [{"kl": 0.01}, {"kl": 0.03}]
    assert mean_std(rows, "kl") == (pytest.approx(0.02), pytest.approx(math.sqrt(2) * 0.01))
    assert mean_std(rows[:1], "kl") == (0.01, 0.0)


def test_seeds():
    assert [config.seed for config in seeds(ExperimentConfig(), 3)] == [0, 1, 2]


def test_train_and_evaluate_returns_one_honest_row():
    config = ExperimentConfig(neurons=8, input_features=32, batch_size=4, timesteps=200, epochs=2, k=2)
    row = train_and_evaluate(config, steps=2000, chains=4, noise_chains=16)
    assert row["k"] == 2 and len(row["losses"]) == 2
    for key in ("final_loss", "long_run_kl", "noise_floor", "seconds"):
        assert math.isfinite(row[key]) and row[key] >= 0
    assert row["final_loss"] == pytest.approx(row["losses"][-1])
    assert 0 < row["refractory_fraction"] < 1


def test_train_and_evaluate_can_skip_the_noise_floor_and_pass_long_run_settings():
    config = ExperimentConfig(neurons=8, input_features=32, batch_size=4, timesteps=200, epochs=2, k=2)
    row = train_and_evaluate(config, steps=1000, chains=4, noise_chains=0, burn_in=0, chunk=500, group=2)
    assert math.isnan(row["noise_floor"]) and math.isfinite(row["long_run_kl"])
    with pytest.raises(ValueError, match="group"):
        train_and_evaluate(config, steps=1000, chains=4, noise_chains=0, group=0)
