import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from workshop_utils.plotting import figure_stochastic_computing, refractory_intervals, save_figure, target_plot


def fake_run(k, T=500, B=4, N=6, epochs=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    refractory = (torch.rand(T, B, N, generator=g) < 0.3).float()
    voltages = torch.rand(T, B, N, generator=g)
    p_target = torch.softmax(torch.randn(2**k, generator=g), 0).expand(B, -1)
    p_sampled = torch.softmax(torch.randn(B, 2**k, generator=g), 1)
    return p_sampled, p_target, torch.linspace(1, 0.01, epochs), refractory, voltages


@pytest.mark.parametrize("k", [3, 5])
def test_three_panels_with_k_traces_and_labels(k):
    fig = figure_stochastic_computing(*fake_run(k))
    traces, probabilities, loss = fig.axes
    assert [label.get_text() for label in traces.get_yticklabels()] == [f"$z_{j}$" for j in range(1, k + 1)]
    assert len(traces.get_lines()) == k
    assert [label.get_text() for label in probabilities.get_xticklabels()][-1] == "1" * k
    assert loss.get_yscale() == "log"
    assert "p_t" in loss.get_ylabel() and "p_s" in loss.get_ylabel()
    assert loss.get_ylabel().index("p_t") < loss.get_ylabel().index("p_s"), "the loss is KL(p_t || p_s)"


def test_figure_uses_the_voltages_it_is_given():
    p_sampled, p_target, losses, refractory, voltages = fake_run(3)
    fig = figure_stochastic_computing(p_sampled, p_target, losses, refractory, voltages, window=(100, 150))
    first_trace = fig.axes[0].get_lines()[0]
    assert np.allclose(first_trace.get_ydata(), voltages[100:150, 0, 0].numpy())


def test_refractory_intervals():
    states = np.array([0, 1, 1, 0, 0, 1, 1, 1, 1])
    assert [(int(s), int(n)) for s, n in refractory_intervals(states)] == [(1, 2), (5, 4)]


def test_shading_matches_refractory_states():
    p_sampled, p_target, losses, refractory, voltages = fake_run(3)
    fig = figure_stochastic_computing(p_sampled, p_target, losses, refractory, voltages, window=(0, 100))
    shaded = sum(path.get_extents().width for path in fig.axes[0].collections[0].get_paths())
    assert shaded == pytest.approx(float(refractory[:100, 0, :3].sum()))


def test_target_plot_and_save(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    target_plot(ax, torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    assert [bar.get_height() for bar in ax.patches] == [0.5, 0.25, 0.125, 0.125]
    path = save_figure(fig, tmp_path / "images" / "target.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["target.png"]
