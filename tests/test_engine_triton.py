"""The triton backend (workshop_utils.engine.gpu) against Norse's loop (engine.reference).

With CUDA the kernels are compiled and every test runs on the GPU, against Norse's loop on the same
GPU. Without it they run in Triton's interpreter on CPU tensors, at small sizes, against Norse's
loop on the CPU, and Triton's compiler builds every kernel variant for sm_90 (H100/H200) in a
subprocess, which catches what only compiled Triton rejects. Triton picks the interpreter from TRITON_INTERPRET when triton is imported, when
each kernel is defined, and when it imports parts of itself lazily during a run: so this module
imports the backend with the variable set and sets it again while its own tests run (a module
fixture), and restores it for the other test modules.

What "the same" means: :func:`equivalence.compare_runs` compares spikes and refractory counters
(identical) and voltages (within 1e-4) of every chain up to its first spike that flips at threshold
by rounding (the two sum W x in different orders), and checks that the flip lies at threshold; each
flip is reported as a warning. Gradients are compared (1e-3 relative) over the steps before the first
flip, by running both again on that prefix: a flip changes the rest of the trajectory, and a
tolerance must not hide it. All of this holds on any CPU and at any thread count, because nothing
here depends on how a BLAS sums beyond rounding.
"""

import contextlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from equivalence import compare_runs, relative_error
from workshop_utils import engine
from workshop_utils.engine import reference

CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda:0" if CUDA else "cpu"


@contextlib.contextmanager
def interpreter_environment():
    """TRITON_INTERPRET=1 without CUDA (the kernels then run in Triton's interpreter), restored after."""
    saved = os.environ.get("TRITON_INTERPRET")
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


TRITON_IMPORTED_BEFORE = "triton" in sys.modules
with interpreter_environment():
    from workshop_utils.engine import gpu

if gpu.gpu_kernels is None:
    pytest.skip(f"the triton backend is unavailable: {gpu._IMPORT_PROBLEM}", allow_module_level=True)
if not CUDA and not gpu.interpreted():
    pytest.skip("triton was imported before this module without TRITON_INTERPRET=1, so its kernels cannot run "
                "on the CPU in this process; run: TRITON_INTERPRET=1 pytest tests/test_engine_triton.py",
                allow_module_level=True)
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (compiled kernels)")


@pytest.fixture(scope="module", autouse=True)
def _interpreter():
    with interpreter_environment():
        yield


def parameters(method="tanh", **lif):
    """The workshop's parameters (v_leak = 1, rho_reset = 10, alpha = 100), with ``lif`` overrides;
    ``rho_reset`` may be among them."""
    rho_reset = lif.pop("rho_reset", torch.as_tensor(10.0))
    values = dict(v_leak=torch.as_tensor(1.0), method=method, alpha=torch.as_tensor(100.0))
    values.update(lif)
    on_device = {name: value.to(DEVICE) if isinstance(value, torch.Tensor) else value for name, value in values.items()}
    rho_reset = rho_reset.to(DEVICE) if isinstance(rho_reset, torch.Tensor) else rho_reset
    return LIFRefracParameters(LIFParameters(**on_device), rho_reset=rho_reset)  # Norse's loop needs them there


def problem(seed, T, B, N, H, rate=0.2, scale_in=1.2, scale_rec=0.4):
    """Input [T, B, H] and weights [N, H], [N, N] (zero diagonal, requiring grad) on DEVICE, strong
    enough that the population spikes often and spends much time refractory."""
    generator = torch.Generator().manual_seed(seed)
    w_in = torch.randn(N, H, generator=generator) * scale_in
    w_rec = torch.randn(N, N, generator=generator) * scale_rec
    w_rec.fill_diagonal_(0.0)
    x = (torch.rand(T, B, H, generator=generator) < rate).float()
    return x.to(DEVICE), w_in.to(DEVICE).requires_grad_(True), w_rec.to(DEVICE).requires_grad_(True)


def initial_state(B, N, v=0.9):
    zeros = torch.zeros(B, N, device=DEVICE)
    return LIFRefracState(LIFState(zeros, torch.full_like(zeros, v), zeros), zeros)


def every_output_loss(spikes, rho, refractory, voltages, final):
    """A loss through every output that has a gradient in Norse's loop, the final state included."""
    k = min(3, refractory.shape[2])
    readout = torch.linspace(0.5, 1.5, k, device=refractory.device)
    return ((refractory[:, :, :k] * readout).mean() + (voltages - 0.5).pow(2).mean() + 0.01 * rho.mean()
            + 0.1 * final.lif.v.mean() + 0.1 * final.lif.i.mean() + 0.1 * final.lif.z.mean() + 0.01 * final.rho.mean())


def triton(input_spikes, input_weights, recurrent_weights, p, dt, state):
    """The triton backend through the engine's entry point, which checks every argument first."""
    return engine.lif_refrac_sequence(input_spikes, input_weights, recurrent_weights, p, dt, state, backend="triton")


def run(simulate, x, w_in, w_rec, p, state, loss=every_output_loss, dt=1e-3):
    """(spikes, rho, voltages) and the gradients of ``loss`` w.r.t. the weights and every state
    field that requires one, of ``simulate`` (:func:`triton` or reference.lif_refrac_loop)."""
    spikes, rho, refractory, voltages, final = simulate(x, w_in, w_rec, p, dt, state)
    leaves = {"w_in": w_in, "w_rec": w_rec}
    leaves.update({name: value for name, value in zip(("z0", "v0", "i0", "rho0"),
                                                      (state.lif.z, state.lif.v, state.lif.i, state.rho))
                   if value.requires_grad})
    gradients = torch.autograd.grad(loss(spikes, rho, refractory, voltages, final), list(leaves.values()))
    return (spikes, rho.detach(), voltages.detach()), dict(zip(leaves, gradients)), final


def chains(state, keep):
    """The state of the chains ``keep`` (a list of batch indices)."""
    lif = state.lif
    return LIFRefracState(LIFState(lif.z[keep], lif.v[keep], lif.i[keep]), state.rho[keep])


def assert_equivalent(x, w_in, w_rec, p, state, loss=every_output_loss, dt=1e-3, min_spikes=100,
                      ours=None, theirs=reference.lif_refrac_loop):
    """``ours`` (default: the triton backend) computes what ``theirs`` (Norse's loop) does: outputs
    equal up to rounding flips at threshold (each shown as a warning), and gradients within 1e-3
    relative. A chain that flips follows another trajectory from there on, so the gradients are
    compared on the chains that did not flip: both run again on those (a new batch size may sum in
    another order and flip another chain, which is then left out too; at least half remain)."""
    ours = triton if ours is None else ours
    keep = list(range(x.shape[1]))
    while True:
        ours_out, gradients, _ = run(ours, x[:, keep], w_in, w_rec, p, chains(state, keep), loss, dt)
        theirs_out, expected_gradients, _ = run(theirs, x[:, keep], w_in, w_rec, p, chains(state, keep), loss, dt)
        if len(keep) == x.shape[1]:
            assert theirs_out[0].sum() >= min_spikes, "the population should be active"
            assert (theirs_out[1] > 0).float().mean() > 0.05, "neurons should be refractory part of the time"
        comparison = compare_runs(ours_out, theirs_out, p.lif.v_th)
        if not comparison.flips:
            break
        for t, b, n, voltage in comparison.flips:
            warnings.warn(f"rounding flip: step {t}, chain {keep[b]}, neuron {n}, voltage {voltage:.9g} at threshold")
        flipped = {keep[b] for _, b, _, _ in comparison.flips}
        keep = [b for b in keep if b not in flipped]
        assert 2 * len(keep) >= x.shape[1], f"rounding flips in {x.shape[1] - len(keep)} of {x.shape[1]} chains"
    for name, expected in expected_gradients.items():
        assert torch.isfinite(gradients[name]).all(), name
        assert expected.norm() > 0, f"the gradient of {name} should not vanish"
        error = relative_error(gradients[name], expected)
        assert error < 1e-3, f"gradient of {name}: relative error {error:.3g}"
    assert torch.all(gradients["w_rec"].diagonal() == 0)


@pytest.mark.parametrize("method, T", [("tanh", 80), ("heavi_erfc", 80), ("super", 40)])
def test_matches_norse(method, T):
    """Two programs (B = 20 > 16, the second one half masked), N = 12 (padded to 16). Norse's "super"
    ignores alpha and its gradients explode over long runs, hence its shorter run."""
    x, w_in, w_rec = problem(1, T, 20, 12, 40)
    assert_equivalent(x, w_in, w_rec, parameters(method), initial_state(20, 12), min_spikes=200)


def test_a_flip_at_threshold_is_shown_and_its_chain_left_out():
    """The comparison itself, on a stand-in for rounding: Norse's loop with the threshold 8e-6 lower
    flips the spikes whose decayed voltage lands between the two thresholds, here once (at
    0.9999992, 7e-7 from one edge of the window: far more than rounding on any CPU). Each flip is
    reported as a warning, its chain left out, and the gradients agree on the others."""
    x, w_in, w_rec = problem(13, 200, 128, 32, 30)
    p = parameters()
    lowered = p._replace(lif=p.lif._replace(v_th=p.lif.v_th - 8e-6))

    def with_lowered_threshold(x, w_in, w_rec, p, dt, state):
        return reference.lif_refrac_loop(x, w_in, w_rec, lowered, dt, state)

    with pytest.warns(UserWarning, match="rounding flip") as flips:
        assert_equivalent(x, w_in, w_rec, p, initial_state(128, 32), ours=with_lowered_threshold)
    assert 1 <= len(flips) <= 32


@pytest.mark.parametrize("method", ["tanh", "heavi_erfc", "super"])
def test_per_neuron_parameters(method):
    """Every parameter as a per-neuron [N] tensor, rho_reset among them negative, zero and fractional
    (a neuron with rho_reset <= 0 is never refractory), and a dt other than 1 ms. Small alphas and
    "super" make the surrogate of Theta(rho) at rho = -1 count (0.42 for tanh at alpha = 1)."""
    N = 10
    p = parameters(
        method,
        tau_mem_inv=torch.linspace(60.0, 200.0, N), tau_syn_inv=torch.linspace(120.0, 300.0, N),
        v_leak=torch.linspace(0.8, 1.2, N), v_th=torch.linspace(0.7, 1.3, N), v_reset=torch.linspace(-0.2, 0.3, N),
        rho_reset=torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0]),
        alpha=torch.tensor([1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0]),
    )
    x, w_in, w_rec = problem(2, 80, 6, N, 30)
    assert_equivalent(x, w_in, w_rec, p, initial_state(6, N), dt=8e-4)


def test_parameters_as_python_numbers():
    """Norse multiplies dt by a Python-number tau in double precision; the kernels get the same float32."""
    p = parameters(tau_mem_inv=140.0, tau_syn_inv=230.0, v_leak=1.05, v_th=0.95, v_reset=0.1, rho_reset=4,
                   alpha=60.0)
    x, w_in, w_rec = problem(3, 80, 6, 12, 30)
    assert_equivalent(x, w_in, w_rec, p, initial_state(6, 12), dt=7e-4)


def arbitrary_state(B, N, seed):
    """A state no run produces, each field requiring grad: non-binary z (in [-1, 2]), rho negative,
    fractional or counting, random v and i."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(B, N, generator=generator) * 3 - 1
    v = torch.rand(B, N, generator=generator) * 1.2
    i = torch.randn(B, N, generator=generator)
    rho = torch.tensor([-1.0, 0.0, 0.0, 0.5, 1.0, 3.0])[torch.randint(6, (B, N), generator=generator)]
    fields = [tensor.to(DEVICE).requires_grad_(True) for tensor in (z, v, i, rho)]
    return LIFRefracState(LIFState(*fields[:3]), fields[3])


def test_initial_state_gradients_and_a_non_binary_z():
    """The recurrent input of the first step uses z as it is (Norse's linear), and the gradients reach
    z, v, i and rho of the initial state as in Norse's loop."""
    x, w_in, w_rec = problem(4, 60, 7, 12, 30)
    assert_equivalent(x, w_in, w_rec, parameters("heavi_erfc"), arbitrary_state(7, 12, 4))


def in_two_pieces(simulate, cut=30):
    """``simulate`` run on the first ``cut`` steps, then continued from that run's final state, which
    carries its gradients (as Norse's does): the outputs joined, and the last final state."""
    def simulate_twice(x, w_in, w_rec, p, dt, state):
        first = simulate(x[:cut], w_in, w_rec, p, dt, state)
        second = simulate(x[cut:], w_in, w_rec, p, dt, first[4])
        return (*(torch.cat([a, b]) for a, b in zip(first[:4], second[:4])), second[4])
    return simulate_twice


def test_continuing_from_the_final_state():
    """A run in two pieces, the second from the final state of the first, back-propagated through
    both, against Norse's loop run in the same two pieces."""
    x, w_in, w_rec = problem(5, 70, 6, 12, 30)
    assert_equivalent(x, w_in, w_rec, parameters("tanh"), arbitrary_state(6, 12, 5),
                      ours=in_two_pieces(triton), theirs=in_two_pieces(reference.lif_refrac_loop))


def test_recurrent_product_in_chunks(monkeypatch):
    """Populations above REGISTER_NEURONS read W_rec and the previous spikes in chunks of 16 from
    memory; forced here for N = 40 (padded to 64: four chunks, the third partly masked, the fourth
    wholly)."""
    monkeypatch.setattr(gpu, "REGISTER_NEURONS", 16)
    assert not gpu.launch_config(40).in_registers
    x, w_in, w_rec = problem(6, 50, 5, 40, 30, scale_rec=0.25)
    assert_equivalent(x, w_in, w_rec, parameters("heavi_erfc"), arbitrary_state(5, 40, 6), min_spikes=200)


def test_without_a_graph_the_same_run_without_the_backward_record():
    """Under torch.no_grad (long runs, target generation) the forward kernel skips v_decayed and no
    graph is kept; the outputs are the same bits."""
    x, w_in, w_rec = problem(7, 40, 5, 12, 30)
    p, state = parameters(), initial_state(5, 12)
    with_graph = triton(x, w_in, w_rec, p, 1e-3, state)
    with torch.no_grad():
        without = triton(x, w_in, w_rec, p, 1e-3, state)
    assert with_graph[2].grad_fn is not None and without[2].grad_fn is None
    for a, b in zip(with_graph[:4], without[:4]):
        assert torch.equal(a, b)
    assert torch.equal(with_graph[4].lif.i, without[4].lif.i)


def test_outputs_are_shaped_like_norses():
    x, w_in, w_rec = problem(8, 9, 3, 5, 7)
    outputs = engine.lif_refrac_sequence(x, w_in, w_rec, parameters(), 1e-3, initial_state(3, 5), backend="triton")
    expected = reference.lif_refrac_loop(x, w_in, w_rec, parameters(), 1e-3, initial_state(3, 5))
    for ours, theirs in zip(outputs[:4], expected[:4]):
        assert ours.shape == theirs.shape == (9, 3, 5) and ours.dtype == torch.float32 and ours.device == x.device
    assert not outputs[0].requires_grad and outputs[2].requires_grad
    final = outputs[4]
    assert all(field.shape == (3, 5) for field in (final.lif.z, final.lif.v, final.lif.i, final.rho))
    assert torch.equal(final.lif.z, outputs[0][-1]) and torch.equal(final.rho, outputs[1][-1].detach())


@pytest.mark.parametrize("change, name", [
    (dict(v_th=torch.ones(3, 5)), "v_th"),  # per chain
    (dict(tau_mem_inv=torch.tensor(100.0, requires_grad=True)), "tau_mem_inv"),
    (dict(alpha=torch.ones(5, dtype=torch.float64)), "alpha"),
    (dict(method="triangle"), "method"),
])
def test_refuses_parameters_it_does_not_implement(change, name):
    """Asked for by name, the backend refuses with the parameter's name (on CUDA tensors "auto" then
    warns once with the same reason and runs Norse's loop: see the CUDA test of the fallback)."""
    x, w_in, w_rec = problem(9, 6, 3, 5, 7)
    p = parameters(**change)
    with pytest.raises(ValueError, match=name):
        engine.lif_refrac_sequence(x, w_in, w_rec, p, 1e-3, initial_state(3, 5), backend="triton")


def test_refuses_shapes_before_any_kernel_runs():
    """A kernel reading out of bounds fails silently on a GPU: every shape is checked first."""
    x, w_in, w_rec = problem(10, 6, 3, 5, 7)
    state = initial_state(3, 5)
    cases = [
        ((x[0], w_in, w_rec, state), "input_spikes"),
        ((x, w_in[:, :6], w_rec, state), "input_weights"),
        ((x, w_in, w_rec[:4], state), "recurrent_weights"),
        ((x, w_in, w_rec, state._replace(rho=state.rho[:2])), "state.rho"),
        ((x, w_in, w_rec, state._replace(lif=state.lif._replace(v=state.lif.v[:, :2]))), "state.lif.v"),
        ((x[:, :0], w_in, w_rec, initial_state(0, 5)), "input_spikes"),
    ]
    for (inputs, name) in cases:
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            triton(*inputs[:3], parameters(), 1e-3, inputs[3])
    with pytest.raises(ValueError, match="float32"):
        triton(x.double(), w_in.double(), w_rec.double(), parameters(), 1e-3,
               LIFRefracState(LIFState(*(f.double() for f in state.lif)), state.rho.double()))
    with pytest.raises(ValueError, match=f"at most {gpu.MAX_NEURONS}"):
        N = gpu.MAX_NEURONS + 1
        triton(x[:, :, :1], torch.zeros(N, 1, device=DEVICE), torch.zeros(N, N, device=DEVICE),
               parameters(), 1e-3, initial_state(3, N))


COMPILE_FOR_HOPPER = textwrap.dedent("""
    import sys, triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from workshop_utils.engine import gpu, gpu_kernels
    grads = dict(HAS_GRAD_Z=True, HAS_GRAD_RHO=True, HAS_GRAD_REFRACTORY=True, HAS_GRAD_V=True, HAS_GRAD_I=True)
    for neurons in map(int, sys.argv[1:]):
        config = gpu.launch_config(neurons)
        common = dict(W_IN_REGISTERS=config.in_registers, BLOCK_B=config.block_b, BLOCK_N=config.block_n,
                      BLOCK_K=config.block_k)
        for kernel, constants in ((gpu_kernels.lif_refrac_forward, dict(RECORD=True, **common)),
                                  (gpu_kernels.lif_refrac_backward, dict(METHOD=0, **grads, **common))):
            signature = {name: "constexpr" if name in constants else "i32" if name in ("T", "B", "N") else "*fp32"
                         for name in kernel.arg_names}
            compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": config.num_warps})
            print(neurons, kernel.__name__, len(compiled.asm["cubin"]), "bytes of sm_90 code")
""")


@pytest.mark.skipif(CUDA, reason="with CUDA the other tests compile and run the kernels")
def test_the_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter does not compile the kernels; Triton's own compiler (with the ptxas its wheel
    ships) does so without a GPU: every launch configuration (N = 12, 32, 100, 256), forward and
    backward with every gradient, to sm_90 machine code (H100/H200), in a process without
    TRITON_INTERPRET. A kernel that only the interpreter accepts fails here."""
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + sys.path)
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER, "12", "32", "100", "256"],
                            capture_output=True, text=True, env=environment, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("bytes of sm_90 code") == 8, result.stdout


# --- on a GPU only: the compiled kernels at sizes the interpreter cannot afford, and the package on CUDA


@requires_cuda
@pytest.mark.parametrize("B, N, H, T", [(64, 32, 256, 400), (2000, 32, 64, 60), (40, 256, 64, 150), (16, 100, 64, 200)])
def test_compiled_kernels_match_norse_on_cuda(B, N, H, T):
    """The workshop's shape, many programs, and N = 256 (the chunked recurrent product) and N = 100
    (padded to 128), compiled, against Norse's loop on the same GPU."""
    x, w_in, w_rec = problem(11, T, B, N, H, rate=0.05, scale_in=0.6, scale_rec=0.3)
    assert_equivalent(x, w_in, w_rec, parameters(), initial_state(B, N))


@requires_cuda
def test_the_model_trains_and_evaluates_on_cuda_with_the_triton_backend():
    """"auto" picks the triton backend for CUDA tensors without a warning; the recipe's training and
    the long-run evaluation run end to end on the GPU."""
    import workshop_utils as wu
    from workshop_utils.evaluation import long_run_distribution

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        config = wu.ExperimentConfig(device=DEVICE, epochs=3, timesteps=200, input_features=128)
        result = wu.train(config, progress=False)
        p = long_run_distribution(result.model, config.k, steps=2000, chains=64,
                                  generator=torch.Generator(device=DEVICE).manual_seed(0))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert p.device.type == "cuda" and abs(float(p.sum()) - 1) < 1e-5


@requires_cuda
def test_auto_falls_back_to_norse_with_a_warning_when_triton_cannot_run(monkeypatch):
    x, w_in, w_rec = problem(12, 20, 4, 8, 16)
    monkeypatch.setattr(gpu, "_IMPORT_PROBLEM", "triton cannot be imported (simulated)")
    engine._warned.clear()
    with pytest.warns(RuntimeWarning, match="simulated"):
        ours = engine.lif_refrac_sequence(x, w_in, w_rec, parameters(), 1e-3, initial_state(4, 8))
    theirs = reference.lif_refrac_loop(x, w_in, w_rec, parameters(), 1e-3, initial_state(4, 8))
    assert torch.equal(ours[3], theirs[3])
    with pytest.raises(RuntimeError, match="simulated"):
        engine.lif_refrac_sequence(x, w_in, w_rec, parameters(), 1e-3, initial_state(4, 8), backend="triton")
