"""The CPU kernels (backend "numba") against Norse's loop (backend "norse"), on chosen cases.

Every comparison goes through ``equivalence.compare_runs``: spikes and refractory counters identical
and voltages within 1e-4 up to each chain's first spike flip, and every flip at threshold (a rounding
flip, which depends on the CPU's BLAS); weight gradients within 1e-3 relative on the chains that did
not flip. So the assertions hold on any CPU. ``tests/test_engine_properties.py`` covers random cases.
"""

import warnings

import numpy as np
import pytest
import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState
from norse.torch.functional.threshold import threshold

from equivalence import compare_gradients, compare_runs, gradient_error, unflipped
from workshop_utils import RefractoryLIFNetwork, engine, notebook_parameters, poisson_input
from workshop_utils.distribution import joint_distribution, kl_per_chain
from workshop_utils.engine import cpu, parallel

requires_numba = pytest.mark.skipif(not engine.fast_path_available(), reason="numba kernels unavailable")
GRADIENT_TOLERANCE = 1e-3  # relative, the bound; measured differences are about 1e-6


def state_of(B, N, v=0.9, z=0.0, i=0.0, rho=0.0, requires_grad=False):
    fields = [torch.full((B, N), value, requires_grad=requires_grad) for value in (z, v, i, rho)]
    return LIFRefracState(LIFState(*fields[:3]), fields[3])


def network(H, N, seed, scale=1.0):
    torch.manual_seed(seed)
    w_in = (torch.randn(N, H) * scale * (2 / N) ** 0.5).requires_grad_(True)
    w_rec = (torch.randn(N, N) * scale * (2 / N) ** 0.5).fill_diagonal_(0.0).requires_grad_(True)
    return w_in, w_rec


def workshop_loss(k=3):
    """The training loss per chain: KL between a uniform target and the sampled joint distribution,
    plus a term on the voltages, so that all outputs carry gradient."""
    def loss(rho, refractory, voltages, final):
        p_sampled = joint_distribution(refractory[:, :, :k])
        target = torch.full_like(p_sampled, 1 / p_sampled.shape[1])
        return kl_per_chain(p_sampled, target) + 0.1 * (voltages - 0.5).pow(2).mean(dim=(0, 2))
    return loss


def every_output(rho, refractory, voltages, final):
    weights = torch.linspace(0.5, 1.5, rho.shape[2])
    return ((refractory + 0.01 * rho + voltages) * weights).mean(dim=(0, 2)) + (final.lif.v + final.lif.i).mean(1)


def assert_gradients_close(result, names=("input_weights", "recurrent_weights")):
    assert result.kept > 0, "every chain flipped"
    for name in names:
        reference = result.reference[name]
        assert reference is not None and reference.norm() > 0, f"no gradient reached {name}"
        assert torch.isfinite(result.ours[name]).all()
        error = gradient_error(result.ours[name], reference)
        assert error < GRADIENT_TOLERANCE, f"{name}: relative error {error:.2g}"


@requires_numba
@pytest.mark.parametrize("method, T, H, seed", [
    ("tanh", 1000, 256, 0), ("tanh", 1000, 1024, 1), ("heavi_erfc", 1000, 256, 3), ("heavi_erfc", 300, 1024, 4),
    ("super", 100, 256, 5),  # Norse's "super" explodes over long runs; over 100 steps it is finite
])
def test_the_workshops_training_matches_norse(method, T, H, seed):
    """The workshop's network and loss at full size: the same run, and gradients within 1e-3.

    A rounding flip ends its chain's comparison, so at most 1/32 of the steps go per flip: on an AMD
    EPYC the five cases had one flip (97.4 % of the steps compared in that case, 100 % in the
    others); 90 % allows three flips at the very start of their chains, or many later ones."""
    w_in, w_rec = network(H, 32, seed)
    x = poisson_input(0.3, T, 32, H, torch.Generator().manual_seed(seed))
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(method), 1e-3, state_of(32, 32),
                               workshop_loss())
    assert result.comparison.compared_steps > 0.9 * result.comparison.total_steps
    assert_gradients_close(result)
    assert torch.all(result.ours["recurrent_weights"].diagonal() == 0)


@requires_numba
@pytest.mark.parametrize("kind", ["dense 0/1", "weighted", "negative and non-binary"])
def test_dense_and_weighted_input(kind):
    """0.3 spikes per step and input, input that is not 0/1, and signed input all follow Norse."""
    generator = torch.Generator().manual_seed(17)
    x = (torch.rand(300, 8, 64, generator=generator) < 0.3).float()
    if kind == "weighted":
        x = x * torch.rand(300, 8, 64, generator=generator) * 2
    elif kind.startswith("negative"):
        x = x * torch.randn(300, 8, 64, generator=generator)
    w_in, w_rec = network(64, 16, 17, scale=0.5)
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(8, 16), every_output)
    assert_gradients_close(result)


@requires_numba
@pytest.mark.parametrize("N, B", [(8, 3), (16, 4), (24, 3), (40, 5), (72, 4), (13, 7)])
def test_every_lane_layout_and_odd_batches(N, B):
    """The kernels add rows in blocks of up to 4 eight-lane vectors, then 1-3 vectors, then single
    lanes (simd.gather, simd.scatter), and the forward pass takes two chains at once (simd.gather2),
    the last one alone in an odd batch: every such layout follows Norse (0/1 and weighted input).
    Three or more chains each, so that a rounding flip (none here on an AMD EPYC; about one per
    160,000 chain-steps in the workshop's test below) leaves chains to compare the gradients on."""
    generator = torch.Generator().manual_seed(N * 10 + B)
    x = (torch.rand(150, B, 40, generator=generator) < 0.3).float()
    x[:, ::2] *= torch.rand(150, (B + 1) // 2, 40, generator=generator) * 2  # weighted input in every other chain
    w_in, w_rec = network(40, N, N + B, scale=0.5)
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(B, N), every_output)
    assert_gradients_close(result)


def test_spikes_in_the_state_are_values_not_flags():
    """Issue #11, defect 2: z0 = 0.5 contributes 0.5 W_rec, as in Norse: v = [0, 0.05], i = [0, 0.4]."""
    p = LIFRefracParameters(LIFParameters())
    state = LIFRefracState(LIFState(torch.tensor([[0.5, 0.0]]), torch.zeros(1, 2), torch.zeros(1, 2)),
                           torch.zeros(1, 2))
    w_rec = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    results = [engine.lif_refrac_sequence(torch.zeros(1, 1, 1), torch.zeros(2, 1), w_rec, p, 1e-3, state, backend)
               for backend in ("numba", "norse")]
    for _, _, _, voltages, final in results:
        torch.testing.assert_close(voltages[0], torch.tensor([[0.0, 0.05]]))
        torch.testing.assert_close(final.lif.i, torch.tensor([[0.0, 0.4]]))


@requires_numba
@pytest.mark.parametrize("z0", [0.5, 2.0, -1.0])
def test_non_binary_initial_spikes_over_30_steps(z0):
    w_in, w_rec = network(16, 8, 20)
    x = poisson_input(0.3, 30, 4, 16, torch.Generator().manual_seed(20))
    state = state_of(4, 8, z=z0, requires_grad=True)
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(), 1e-3, state, every_output)
    assert_gradients_close(result, ("input_weights", "recurrent_weights", "z", "v", "i"))


@requires_numba
@pytest.mark.parametrize("rho_reset", [-1.0, -0.3, 2.5])
def test_refractory_reset_of_any_sign(rho_reset):
    """Issue #11, defect 3: with rho < 0 the surrogate of Theta(rho) is not 0 (alpha = 3 keeps it
    visible); the gradients follow Norse's."""
    p = LIFRefracParameters(LIFParameters(v_leak=torch.tensor(1.0), method="tanh", alpha=torch.tensor(3.0)),
                            rho_reset=torch.tensor(rho_reset))
    w_in, w_rec = network(32, 8, 21)
    x = poisson_input(0.3, 200, 4, 32, torch.Generator().manual_seed(21))
    result = compare_gradients("numba", x, w_in, w_rec, p, 1e-3, state_of(4, 8, rho=-0.5), every_output)
    assert_gradients_close(result)


@requires_numba
@pytest.mark.parametrize("name, values", [
    ("v_th", torch.linspace(0.5, 1.5, 6)), ("tau_mem_inv", torch.linspace(50, 200, 6)),
    ("tau_syn_inv", torch.linspace(100, 300, 6)), ("v_reset", torch.linspace(-0.5, 0.5, 6)),
    ("v_leak", torch.linspace(0.5, 1.5, 6)), ("alpha", torch.linspace(20.0, 100.0, 6)),
    ("v_th", torch.linspace(0.8, 1.2, 4).reshape(4, 1)),  # per chain: [B, 1]
])
def test_per_neuron_and_per_chain_parameters(name, values):
    """Issue #11, defect 3: parameters that Norse broadcasts against [B, N] are honoured."""
    lif = notebook_parameters().lif._replace(**{name: values})
    p = LIFRefracParameters(lif, rho_reset=torch.tensor(3.0))
    w_in, w_rec = network(24, 6, 22)
    x = poisson_input(0.5, 300, 4, 24, torch.Generator().manual_seed(22))
    result = compare_gradients("numba", x, w_in, w_rec, p, 1e-3, state_of(4, 6), every_output)
    assert_gradients_close(result)


@requires_numba
def test_gradients_reach_the_initial_state_and_the_input():
    """Like Norse's loop, which starts from a state whose v requires grad (a scalar there)."""
    w_in, w_rec = network(16, 8, 23)
    x = poisson_input(0.5, 100, 4, 16, torch.Generator().manual_seed(23)).requires_grad_(True)
    state = state_of(4, 8, z=1.0, i=0.5, rho=2.0, requires_grad=True)
    state = state._replace(lif=state.lif._replace(v=torch.tensor(0.9, requires_grad=True)))  # broadcast, as Norse's
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(), 1e-3, state, every_output)
    assert result.ours["v"].shape == ()
    assert_gradients_close(result, ("input_weights", "recurrent_weights", "input_spikes", "z", "v", "i", "rho"))


@requires_numba
def test_a_run_continues_from_its_final_state():
    """Two pieces, the second from the first's final state, give the whole run bit for bit; a loss
    on the second back-propagates through the final state into the first, as in Norse's loop."""
    w_in, w_rec = network(64, 16, 12)
    x = poisson_input(0.3, 500, 8, 64, torch.Generator().manual_seed(12))
    p = notebook_parameters()
    with torch.no_grad():
        whole = engine.lif_refrac_sequence(x, w_in, w_rec, p, 1e-3, state_of(8, 16), "numba")
        first = engine.lif_refrac_sequence(x[:237], w_in, w_rec, p, 1e-3, state_of(8, 16), "numba")
        second = engine.lif_refrac_sequence(x[237:], w_in, w_rec, p, 1e-3, first[4], "numba")
    for index in range(4):
        assert torch.equal(torch.cat([first[index], second[index]]), whole[index])
    assert torch.equal(second[4].lif.i, whole[4].lif.i) and torch.equal(second[4].rho, whole[4].rho)
    assert first[4].lif.z.sum() > 0 and first[4].rho.sum() > 0, "the test needs a state with spikes"

    runs, weights = {}, {}
    for backend in ("numba", "norse"):
        weights[backend] = [w.detach().clone().requires_grad_(True) for w in (w_in, w_rec)]
        head = engine.lif_refrac_sequence(x[:237], *weights[backend], p, 1e-3, state_of(8, 16), backend)
        tail = engine.lif_refrac_sequence(x[237:], *weights[backend], p, 1e-3, head[4], backend)
        runs[backend] = (head, tail)
    joined = {backend: [torch.cat([head[index], tail[index]]) for index in (0, 1, 3)]  # spikes, rho, voltages
              for backend, (head, tail) in runs.items()}
    keep = unflipped(compare_runs(joined["numba"], joined["norse"], p.lif.v_th), 8)  # chains without a rounding flip
    assert keep.sum() > 0, "every chain flipped"
    for backend, (head, tail) in runs.items():
        _, rho, refractory, voltages, _ = tail
        (every_output(rho, refractory, voltages, head[4]) * keep).sum().backward()
    for ours, reference in zip(weights["numba"], weights["norse"]):
        assert gradient_error(ours.grad, reference.grad) < GRADIENT_TOLERANCE


@requires_numba
@pytest.mark.parametrize("output", [0, 1, 2])
def test_a_loss_on_one_output_alone(output):
    """The outputs a loss does not use get no gradient (None, not zeros); each of rho, Theta(rho)
    and the voltages alone back-propagates as in Norse's loop."""
    w_in, w_rec = network(64, 16, 13)
    x = poisson_input(0.3, 300, 8, 64, torch.Generator().manual_seed(13))
    result = compare_gradients("numba", x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(8, 16),
                               lambda *outputs: outputs[output][:, :, :4].mean(dim=(0, 2)))
    assert_gradients_close(result)


@requires_numba
def test_the_number_of_threads_changes_no_number():
    """The batch splits into fixed gradient groups, whatever the thread count: the same input gives
    bit for bit the same outputs and gradients at 1, 2, 3, 4 and 16 threads."""
    w_in, w_rec = network(96, 16, 14)
    x = poisson_input(0.3, 400, 19, 96, torch.Generator().manual_seed(14))
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, 2, 3, 4, 16):
            torch.set_num_threads(count)
            w_in.grad = w_rec.grad = None
            _, rho, refractory, voltages, _ = engine.lif_refrac_sequence(
                x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(19, 16), "numba")
            every_output(rho, refractory, voltages, _).sum().backward()
            runs.append([rho.detach(), voltages.detach(), w_in.grad.clone(), w_rec.grad.clone()])
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], run))


@requires_numba
def test_the_thread_pool_computes_what_the_openmp_region_does(monkeypatch):
    """Where the kernels run (torch's OpenMP threads or a thread pool) does not change a bit."""
    w_in, w_rec = network(64, 16, 15)
    x = poisson_input(0.3, 300, 8, 64, torch.Generator().manual_seed(15))

    def run():
        w_in.grad = w_rec.grad = None
        _, rho, refractory, voltages, final = engine.lif_refrac_sequence(
            x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(8, 16), "numba")
        every_output(rho, refractory, voltages, final).sum().backward()
        return [voltages.detach(), w_in.grad.clone(), w_rec.grad.clone()]

    on_openmp = run()
    monkeypatch.setattr(cpu, "in_parallel", lambda calls: parallel.in_parallel(calls, use_openmp=False))
    assert all(torch.equal(a, b) for a, b in zip(on_openmp, run()))


@requires_numba
def test_outputs_still_in_use_are_not_overwritten_by_the_next_call():
    """The spike lists live in reused memory: later runs must not write into the lists (or outputs)
    of a run whose autograd graph is still alive."""
    w_in, w_rec = network(64, 16, 16)
    x = [poisson_input(0.3, 200, 8, 64, torch.Generator().manual_seed(seed)) for seed in (16, 17)]
    p = notebook_parameters()
    first = engine.lif_refrac_sequence(x[0], w_in, w_rec, p, 1e-3, state_of(8, 16), "numba")
    kept = [tensor.detach().clone() for tensor in first[:4]]
    for _ in range(3):  # later runs, whose graphs are dropped at once
        engine.lif_refrac_sequence(x[1], w_in, w_rec, p, 1e-3, state_of(8, 16), "numba")[3].sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(first[:4], kept))
    w_in.grad = None
    first[3].sum().backward()  # the first run's graph still holds its own lists
    expected = w_in.grad.clone()
    w_in.grad = None
    engine.lif_refrac_sequence(x[0], w_in, w_rec, p, 1e-3, state_of(8, 16), "numba")[3].sum().backward()
    assert torch.equal(w_in.grad, expected)


@requires_numba
@pytest.mark.parametrize("method", ["tanh", "heavi_erfc", "super"])
def test_surrogate_is_norses_backward(method):
    x = torch.cat([torch.linspace(-0.2, 0.2, 801), torch.arange(-11.0, 11.0), torch.tensor([1e-3, -1e-3, 0.0])])
    for alpha in (100.0, 3.0):
        x_grad = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(threshold(x_grad, method, torch.as_tensor(alpha)).sum(), x_grad)
        code = cpu.METHODS[method]
        ours = torch.tensor([float(cpu._surrogate(np.float32(v), code, np.float32(alpha))) for v in x])
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
        assert torch.equal(ours == 0, expected == 0)


@requires_numba
def test_sparse_input_is_its_dense_values():
    w_in, w_rec = network(32, 8, 24)
    x = poisson_input(0.3, 50, 4, 32, torch.Generator().manual_seed(24))
    runs = [engine.lif_refrac_sequence(spikes, w_in, w_rec, notebook_parameters(), 1e-3, state_of(4, 8), "numba")
            for spikes in (x, x.to_sparse())]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][:4], runs[1][:4]))


@requires_numba
def test_first_use_inside_no_grad_still_finds_the_fast_path():
    """The target is generated under torch.no_grad(); the kernels' self-test must not fail there."""
    cpu._compile_problem.cache_clear()
    try:
        with torch.no_grad():
            assert cpu._compile_problem() == ""
    finally:
        cpu._compile_problem.cache_clear()


# --- the choice of backend -----------------------------------------------------------------------


def test_falls_back_by_itself_once_and_says_how_to_get_the_fast_path(monkeypatch):
    monkeypatch.setattr(cpu, "_compile_problem", lambda: "numba cannot be imported (pretend)")
    monkeypatch.setattr(engine, "_warned", set())
    w_in, w_rec = network(16, 8, 9)
    x = poisson_input(0.3, 50, 4, 16, torch.Generator().manual_seed(9))
    with pytest.warns(RuntimeWarning, match=r"(?s)numba cannot be imported \(pretend\).*slower.*pip install numba"):
        fallback = engine.lif_refrac_sequence(x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(4, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.lif_refrac_sequence(x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(4, 8))  # no second warning
    reference = engine.lif_refrac_sequence(x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(4, 8), "norse")
    assert all(torch.equal(a, b) for a, b in zip(fallback[:4], reference[:4]))
    with pytest.raises(RuntimeError, match="pretend"):
        engine.lif_refrac_sequence(x, w_in, w_rec, notebook_parameters(), 1e-3, state_of(4, 8), "numba")


def fallback_cases():
    """(arguments changed from a good call, the parameter the warning or error names)."""
    lif = notebook_parameters().lif
    return [
        (dict(dtype=torch.float64), "float64"),
        (dict(p=LIFRefracParameters(lif._replace(v_th=torch.tensor(1.0, requires_grad=True)), torch.tensor(5.0))),
         "p.lif.v_th requires grad"),
        (dict(p=LIFRefracParameters(lif._replace(method="triangle", alpha=0.3), torch.tensor(5.0))), "triangle"),
        (dict(p=LIFRefracParameters(lif._replace(v_reset=torch.tensor(float("inf"))), torch.tensor(5.0))),
         "p.lif.v_reset is not finite"),
        (dict(dt=torch.tensor(1e-3, requires_grad=True)), "dt requires grad"),
    ]


@requires_numba
@pytest.mark.parametrize("changes, reason", fallback_cases())
def test_what_the_kernels_cannot_compute_exactly_runs_norses_loop(changes, reason, monkeypatch):
    """"auto": Norse's loop (same numbers as backend "norse") and one warning that says why;
    "numba": a ValueError that says why."""
    monkeypatch.setattr(engine, "_warned", set())
    dtype = changes.get("dtype", torch.float32)
    p, dt = changes.get("p", notebook_parameters()), changes.get("dt", 1e-3)
    w_in, w_rec = (w.detach().to(dtype) for w in network(16, 8, 10))
    x = poisson_input(0.3, 40, 4, 16, torch.Generator().manual_seed(10)).to(dtype)
    state = LIFRefracState(LIFState(*(f.to(dtype) for f in state_of(4, 8).lif)), torch.zeros(4, 8, dtype=dtype))
    with pytest.warns(RuntimeWarning, match=reason):
        fallback = engine.lif_refrac_sequence(x, w_in, w_rec, p, dt, state)
    reference = engine.lif_refrac_sequence(x, w_in, w_rec, p, dt, state, "norse")
    for ours, theirs in zip(fallback[:4], reference[:4]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match=reason):
        engine.lif_refrac_sequence(x, w_in, w_rec, p, dt, state, "numba")


def test_a_parameter_that_requires_grad_gets_norses_gradient(monkeypatch):
    monkeypatch.setattr(engine, "_warned", set())
    v_th = torch.tensor(1.0, requires_grad=True)
    p = LIFRefracParameters(notebook_parameters().lif._replace(v_th=v_th), torch.tensor(10.0))
    w_in, w_rec = network(16, 8, 11)
    x = poisson_input(0.3, 60, 4, 16, torch.Generator().manual_seed(11))
    with pytest.warns(RuntimeWarning, match="requires grad"):
        engine.lif_refrac_sequence(x, w_in, w_rec, p, 1e-3, state_of(4, 8))[1].sum().backward()
    assert v_th.grad is not None and torch.isfinite(v_th.grad)


@requires_numba
def test_network_trace_runs_the_kernels_on_the_cpu():
    """The model's "fast" backend is the engine's "auto": here the kernels, without a warning."""
    torch.manual_seed(0)
    model = RefractoryLIFNetwork(16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = model.trace(poisson_input(0.3, 20, 2, 16, torch.Generator().manual_seed(0)))
    assert trace.rho.grad_fn is not None and "LIFRefracNumba" in type(trace.rho.grad_fn).__name__
