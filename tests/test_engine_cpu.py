"""The fused kernels of workshop_utils.fast_lif against Norse's cell looped over time (backend "norse")."""

import warnings

import pytest
import torch
from norse.torch.functional.lif import LIFState
from norse.torch.functional.lif_refrac import LIFRefracState
from norse.torch.functional.threshold import threshold

from workshop_utils.engine import cpu as fast_lif, parallel
from workshop_utils.distribution import joint_distribution
from workshop_utils import RefractoryLIFNetwork, notebook_parameters, poisson_input


def start(x, w_in, v=0.9):
    """The network's initial state for input ``x`` [T, B, H] and weights ``w_in`` [N, H]."""
    zeros = torch.zeros(x.shape[1], w_in.shape[0], dtype=x.dtype)
    return LIFRefracState(LIFState(zeros, torch.full_like(zeros, v), zeros), zeros)


def relative_error(value, reference):
    return float((value - reference).norm() / reference.norm())


def simulate(backend, method, T, seed, B=32, N=32, H=256, implementation=None):
    """Trace, and weight gradients of a loss that uses the refractory readout and the voltages."""
    torch.manual_seed(seed)
    network = RefractoryLIFNetwork(H, N, notebook_parameters(method), backend=backend)
    x = poisson_input(0.3, T, B, H, torch.Generator().manual_seed(1000 + seed))
    if implementation is None:
        trace = network.trace(x)
        spikes, rho, refractory, voltages = trace.spikes, trace.rho, trace.refractory, trace.voltages
    else:
        spikes, rho, refractory, voltages, _ = fast_lif.lif_refrac_fast(
            x, network.input_weights, network.recurrent_weights, network.p, network.dt,
            network.initial_state(B, "cpu"), implementation=implementation,
        )
    p = joint_distribution(refractory[:, :, :3])
    kl = torch.nn.functional.kl_div(torch.log(p.clamp(min=1e-7)), torch.full_like(p, 1 / 8), reduction="batchmean")
    loss = kl + 0.1 * (voltages - 0.5).pow(2).mean()
    loss.backward()
    return spikes, rho.detach(), voltages.detach(), network.input_weights.grad, network.recurrent_weights.grad


def assert_same(fast, norse):
    spikes, rho, voltages, grad_in, grad_rec = fast
    spikes_ref, rho_ref, voltages_ref, grad_in_ref, grad_rec_ref = norse
    assert spikes_ref.sum() > 100, "the population should be active"
    mismatch = (spikes != spikes_ref).nonzero()
    assert len(mismatch) == 0, f"spikes differ first at [t, b, n] = {mismatch[0].tolist()}"
    assert torch.equal(rho, rho_ref)
    assert (voltages - voltages_ref).abs().max() <= 1e-4
    assert torch.isfinite(grad_in).all() and torch.isfinite(grad_rec).all()
    assert grad_in_ref.norm() > 0 and grad_rec_ref.norm() > 0
    assert relative_error(grad_in, grad_in_ref) < 1e-3
    assert relative_error(grad_rec, grad_rec_ref) < 1e-3
    assert torch.all(grad_rec.diagonal() == 0)


requires_numba = pytest.mark.skipif(not fast_lif.fast_path_available(), reason="numba kernels unavailable")


@requires_numba
@pytest.mark.parametrize(
    "method, T, seed",
    [("tanh", 1000, 0), ("tanh", 1000, 1), ("tanh", 300, 2), ("heavi_erfc", 1000, 3), ("heavi_erfc", 300, 4)],
)
def test_fast_path_matches_norse(method, T, seed):
    """Same spikes and refractory counters, voltages, and weight gradients as Norse's loop; over
    T = 1000 with tanh this is also the check that the gradients stay finite."""
    assert_same(simulate("fast", method, T, seed), simulate("norse", method, T, seed))


@requires_numba
def test_voltages_are_bit_identical_where_the_summation_order_is_reproduced():
    """Where fast_lif found MKL's summation order for the shape (the workshop's, on this machine),
    the kernel performs Norse's float32 operations exactly: the voltages are identical, not just close."""
    B, N, H = 32, 32, 256
    if not (fast_lif._summation_chunk(B, H, N) and fast_lif._summation_chunk(B, N, N)):
        pytest.skip("this BLAS sums in an order fast_lif does not reproduce")
    fast, norse = simulate("fast", "tanh", 300, 10), simulate("norse", "tanh", 300, 10)
    assert torch.equal(fast[2], norse[2])


@requires_numba
def test_the_recipes_1024_inputs_match_norse_bit_for_bit():
    """H = 1024 (the workshop's recipe): MKL sums the input in blocks of 192 there, which the
    kernel reproduces, so the voltages are identical again and the weight gradients close."""
    if not fast_lif._summation_chunk(32, 1024, 32):
        pytest.skip("this BLAS sums in an order fast_lif does not reproduce")
    fast, norse = simulate("fast", "tanh", 300, 14, H=1024), simulate("norse", "tanh", 300, 14, H=1024)
    assert_same(fast, norse)
    assert torch.equal(fast[2], norse[2])


@requires_numba
def test_the_thread_pool_computes_what_the_openmp_region_does(monkeypatch):
    """Where the kernels run (torch's OpenMP threads or a thread pool) does not change a bit."""
    on_openmp = simulate("fast", "tanh", 300, 15)
    monkeypatch.setattr(fast_lif, "in_parallel", lambda calls: parallel.in_parallel(calls, use_openmp=False))
    on_pool = simulate("fast", "tanh", 300, 15)
    for ours, theirs in zip(on_openmp, on_pool):
        assert torch.equal(ours, theirs)


@requires_numba
def test_outputs_still_in_use_are_not_overwritten_by_the_next_call():
    """The records live in reused memory (workshop_utils.buffers): a second run must not write into
    the tensors of a first one that are still referenced, nor into its autograd graph."""
    torch.manual_seed(16)
    network = RefractoryLIFNetwork(64, 16, notebook_parameters())
    x = [poisson_input(0.3, 200, 8, 64, torch.Generator().manual_seed(seed)) for seed in (16, 17)]
    first = network.trace(x[0])
    kept = [tensor.detach().clone() for tensor in (first.spikes, first.rho, first.voltages)]
    for _ in range(3):  # later runs, whose records are dropped at once
        network.trace(x[1]).voltages.sum().backward()
    assert all(torch.equal(a, b) for a, b in zip((first.spikes, first.rho, first.voltages), kept))
    network.zero_grad()
    first.voltages.sum().backward()  # the first run's graph still holds its own records
    expected = network.input_weights.grad.clone()
    network.zero_grad()
    network.trace(x[0]).voltages.sum().backward()
    assert torch.equal(network.input_weights.grad, expected)


@requires_numba
def test_super_surrogate_matches_norse_while_it_is_finite():
    """Norse's "super" ignores alpha and explodes over long runs; over 100 steps it is still finite."""
    assert_same(simulate("fast", "super", 100, 5), simulate("norse", "super", 100, 5))


@requires_numba
def test_small_odd_shapes_match_norse():
    assert_same(
        simulate("fast", "tanh", 400, 6, B=5, N=12, H=40), simulate("norse", "tanh", 400, 6, B=5, N=12, H=40)
    )


@requires_numba
@pytest.mark.parametrize("method", ["tanh", "heavi_erfc", "super"])
def test_surrogate_is_norses_backward(method):
    x = torch.cat([torch.linspace(-0.2, 0.2, 801), torch.arange(0.0, 11.0), torch.tensor([-3.0, 1e-3, -1e-3])])
    x.requires_grad_(True)
    alpha = torch.as_tensor(100.0)
    (expected,) = torch.autograd.grad(threshold(x, method, alpha).sum(), x)
    code = fast_lif._METHOD_CODES[method]
    ours = torch.tensor([float(fast_lif._surrogate(fast_lif.np.float32(v), code, fast_lif.np.float32(100.0)))
                         for v in x.detach()])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours == 0, expected == 0)


def both_implementations(seed, loss, x=None):
    """(spikes, rho, voltages, grad_in, grad_rec) of the numba kernels and of Norse's loop, for
    ``loss(rho, refractory, voltages)`` on one random network of 16 neurons and 64 plain tensors of
    weights (no autapse hook), with ``x`` [T, 8, 64] or 300 steps of Poisson input."""
    torch.manual_seed(seed)
    w_in = (torch.randn(16, 64) * 0.5).requires_grad_(True)
    w_rec = (torch.randn(16, 16) * 0.5).requires_grad_(True)
    x = poisson_input(0.3, 300, 8, 64, torch.Generator().manual_seed(seed)) if x is None else x
    results = []
    for implementation in ("numba", "torch"):
        spikes, rho, refractory, voltages, _ = fast_lif.lif_refrac_fast(
            x, w_in, w_rec, notebook_parameters(), 1e-3, start(x, w_in), implementation
        )
        loss(rho, refractory, voltages).backward()
        results.append((spikes, rho.detach(), voltages.detach(), w_in.grad.clone(), w_rec.grad.clone()))
        w_in.grad = w_rec.grad = None
    return results


def every_output(rho, refractory, voltages):
    return refractory.mean() + threshold(rho, "tanh", 100.0).mean() + voltages.mean()


@requires_numba
def test_recurrent_gradient_has_zero_diagonal_without_norses_hook():
    """A plain tensor has no autapse hook: the fast path zeroes the diagonal itself."""
    (*_, fast), (*_, reference) = both_implementations(7, every_output)
    assert torch.all(fast.diagonal() == 0) and torch.all(reference.diagonal() == 0)
    assert reference.norm() > 0
    assert relative_error(fast, reference) < 1e-3


@requires_numba
@pytest.mark.parametrize("output", [0, 1, 2])
def test_a_loss_on_one_output_alone(output):
    """The outputs a loss does not use get no gradient (None, not zeros); each of rho, Theta(rho)
    and the voltages alone back-propagates as in Norse's loop."""
    weights = torch.linspace(0.5, 1.5, 4)
    fast, norse = both_implementations(13, lambda *outputs: (outputs[output][:, :, :4] * weights).mean())
    assert norse[3].norm() > 0 and norse[4].norm() > 0
    assert relative_error(fast[3], norse[3]) < 1e-3 and relative_error(fast[4], norse[4]) < 1e-3


@requires_numba
def test_input_that_is_not_binary():
    """Weighted input (not 0/1 spikes) takes the dense input path and still matches Norse's loop."""
    x = poisson_input(0.3, 300, 8, 64, torch.Generator().manual_seed(11)) * torch.rand(300, 8, 64) * 2
    assert_same(*both_implementations(11, every_output, x))


@requires_numba
def test_dense_binary_input():
    """A third of the inputs spiking at every step overflows the spike lists' first guess (1/8);
    the kernel then lists them again with room for all, and still matches Norse's loop."""
    x = (torch.rand(300, 8, 64, generator=torch.Generator().manual_seed(17)) < 1 / 3).float()
    assert_same(*both_implementations(17, every_output, x * 0.2))  # weighted: the dense path
    assert_same(*both_implementations(17, every_output, x))
    w_in, w_rec = torch.randn(16, 64), torch.randn(16, 16, requires_grad=True)
    _, rho, *_ = fast_lif.lif_refrac_fast(x, w_in, w_rec, notebook_parameters(), 1e-3, start(x, w_in), "numba")
    assert rho.grad_fn.binary and all(len(indices) == 300 * 4 * 64 for _, indices in rho.grad_fn.spike_lists)


def test_forced_torch_implementation_is_norses_loop():
    fallback = simulate("fast", "tanh", 200, 8, implementation="torch")
    assert_same(fallback, simulate("norse", "tanh", 200, 8))


def test_falls_back_by_itself_and_warns_once(monkeypatch):
    monkeypatch.setattr(fast_lif, "_fast_path_problem", lambda: "numba cannot be imported: pretend")
    monkeypatch.setattr(fast_lif, "_warned", set())
    with pytest.warns(RuntimeWarning, match="plain PyTorch loop: numba cannot be imported: pretend"):
        fallback = simulate("fast", "heavi_erfc", 200, 9, implementation="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate("fast", "heavi_erfc", 20, 9, implementation="auto")  # no second warning
    assert_same(fallback, simulate("norse", "heavi_erfc", 200, 9))
    with pytest.raises(RuntimeError, match="pretend"):
        simulate("fast", "tanh", 10, 9, implementation="numba")


def test_float64_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(fast_lif, "_warned", set())
    x = poisson_input(0.3, 30, 2, 8, torch.Generator().manual_seed(0)).double()
    w_in, w_rec = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="not float32"):
        spikes, rho, _, voltages, _ = fast_lif.lif_refrac_fast(x, w_in, w_rec, notebook_parameters(), 1e-3, start(x, w_in))
    expected = fast_lif.lif_refrac_fast(
        x, w_in, w_rec, notebook_parameters(), 1e-3, start(x, w_in), implementation="torch"
    )
    assert voltages.dtype == torch.float64
    assert torch.equal(spikes, expected[0]) and torch.equal(voltages, expected[3])


def test_rejects_unknown_implementation():
    x = torch.zeros(2, 1, 3)
    with pytest.raises(ValueError, match="implementation"):
        fast_lif.lif_refrac_fast(
            x, torch.zeros(2, 3), torch.zeros(2, 2), notebook_parameters(), 1e-3, start(x, torch.zeros(2, 3)), "cuda"
        )


@requires_numba
def test_a_run_continues_from_its_final_state():
    """Two chunks, the second started from the first's final state, equal one run; from that
    non-trivial state (spikes, currents, refractory counters) the gradients still match Norse's."""
    torch.manual_seed(12)
    network = RefractoryLIFNetwork(64, 16, notebook_parameters())
    reference = RefractoryLIFNetwork(64, 16, notebook_parameters(), backend="norse")
    reference.load_state_dict(network.state_dict())
    x = poisson_input(0.3, 500, 8, 64, torch.Generator().manual_seed(12))
    with torch.no_grad():
        whole = network.trace(x)
        first = network.trace(x[:237])
        second = network.trace(x[237:], first.final_state)
    assert torch.equal(torch.cat([first.spikes, second.spikes]), whole.spikes)
    assert torch.equal(torch.cat([first.voltages, second.voltages]), whole.voltages)
    assert torch.equal(second.final_state.lif.i, whole.final_state.lif.i)
    state = first.final_state
    assert state.lif.z.sum() > 0 and state.rho.sum() > 0, "the test needs a state with spikes"
    grads = []
    for model in (network, reference):
        trace = model.trace(x[237:], state)
        (joint_distribution(trace.refractory[:, :, :3])[:, 0].sum() + trace.voltages.mean()).backward()
        grads.append((model.input_weights.grad, model.recurrent_weights.grad))
        assert torch.equal(trace.spikes, second.spikes)
    (fast_in, fast_rec), (norse_in, norse_rec) = grads
    assert relative_error(fast_in, norse_in) < 1e-3 and relative_error(fast_rec, norse_rec) < 1e-3


def test_first_use_inside_no_grad_still_finds_the_fast_path(monkeypatch):
    """The target is generated under torch.no_grad(); the kernels' self-test must not fail there."""
    fast_lif._fast_path_problem.cache_clear()
    try:
        with torch.no_grad():
            assert fast_lif._fast_path_problem() == "" or "cannot be imported" in fast_lif._fast_path_problem()
    finally:
        fast_lif._fast_path_problem.cache_clear()
