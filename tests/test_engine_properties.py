"""Property tests: the CPU kernels compute what Norse's loop computes, for everything Norse accepts.

Hypothesis draws shapes (T, B, N, H down to 1), weights, every parameter of Norse's
``LIFParameters``/``LIFRefracParameters`` (each a scalar or per neuron; rho_reset of either sign;
the three surrogates the kernels differentiate), initial states (non-binary z, rho of any sign),
input densities from 0 to 1 with 0/1 or arbitrary values, and a run continued from the final state
of a first one. Each example is compared with ``equivalence.compare_gradients``: spikes and rho
identical and voltages within 1e-4 up to each chain's first flip (a flip must happen at threshold),
gradients of the weights, the input and the initial state within 1e-3 relative on the chains that
did not flip. The seed is fixed (``derandomize``), so CI runs the same examples every time; the
number of examples with flips shows in ``pytest --hypothesis-show-statistics``.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from equivalence import compare_gradients, gradient_error
from workshop_utils import engine

pytestmark = pytest.mark.skipif(not engine.fast_path_available(), reason="numba kernels unavailable")
SETTINGS = settings(derandomize=True, max_examples=300, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GRADIENT_TOLERANCE = 1e-3  # relative


@st.composite
def parameter(draw, low, high, neurons):
    """A number, a 0-d tensor or a per-neuron [N] tensor in [low, high]."""
    kind = draw(st.sampled_from(["number", "scalar tensor", "per neuron"]))
    if kind == "per neuron":
        values = draw(st.lists(st.floats(low, high), min_size=neurons, max_size=neurons))
        return torch.tensor(values)
    value = draw(st.floats(low, high))
    return value if kind == "number" else torch.tensor(value)


@st.composite
def simulations(draw):
    """Arguments of one call of ``lif_refrac_sequence``, with gradients wanted for the weights, the
    input and the state."""
    T, B = draw(st.integers(1, 40)), draw(st.integers(1, 4))
    N, H = draw(st.integers(1, 8)), draw(st.integers(1, 12))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    density = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    values = draw(st.sampled_from(["0/1", "positive", "signed"]))
    x = (torch.rand(T, B, H, generator=generator) < density).float()
    if values == "positive":
        x = x * torch.rand(T, B, H, generator=generator) * 2
    elif values == "signed":
        x = x * torch.randn(T, B, H, generator=generator)
    scale = draw(st.floats(0.1, 3.0))
    w_in = torch.randn(N, H, generator=generator) * scale * (2 / max(H * density, 1)) ** 0.5
    w_rec = torch.randn(N, N, generator=generator) * scale * (1 / N) ** 0.5
    lif = LIFParameters(
        tau_syn_inv=draw(parameter(20.0, 500.0, N)), tau_mem_inv=draw(parameter(20.0, 500.0, N)),
        v_leak=draw(parameter(-1.0, 2.0, N)), v_th=draw(parameter(0.2, 2.0, N)), v_reset=draw(parameter(-1.0, 0.5, N)),
        method=draw(st.sampled_from(["tanh", "heavi_erfc", "super"])), alpha=draw(parameter(1.0, 200.0, N)))
    p = LIFRefracParameters(lif, rho_reset=draw(parameter(-2.0, 12.0, N)))
    dt = draw(st.sampled_from([1e-3, 5e-4]) | st.floats(1e-4, 2e-3))
    binary_z = draw(st.booleans())
    z = (torch.rand(B, N, generator=generator) < 0.3).float()
    if not binary_z:
        z = z * torch.randn(B, N, generator=generator) * 2
    state = LIFRefracState(
        LIFState(z, torch.rand(B, N, generator=generator) * 3 - 1, torch.randn(B, N, generator=generator) * scale),
        torch.randint(-2, 11, (B, N), generator=generator).float() * draw(st.sampled_from([1.0, 0.5, 0.37])))
    event(f"input: {values}, density {'0' if density == 0 else '1' if density == 1 else 'between'}")
    return x, w_in, w_rec, p, dt, state


def chain_loss(rho, refractory, voltages, final):
    """One number per chain from every output and the final state."""
    N = rho.shape[2]
    weights = torch.linspace(0.5, 1.5, N)
    return (((refractory + 0.05 * rho + voltages) * weights).mean(dim=(0, 2))
            + (final.lif.v + 0.1 * final.lif.i + final.lif.z + final.rho).mean(dim=1))


def require_grad(x, w_in, w_rec, state):
    fields = [field.clone().requires_grad_(True) for field in (*state.lif, state.rho)]
    return (x.clone().requires_grad_(True), w_in.clone().requires_grad_(True), w_rec.clone().requires_grad_(True),
            LIFRefracState(LIFState(*fields[:3]), fields[3]))


def check(result):
    flips = len(result.comparison.flips)
    event(f"chains with a flip: {'some' if flips else 'none'}")
    if result.kept == 0:
        return
    for name, reference in result.reference.items():
        ours = result.ours[name]
        if reference is None:
            assert ours is None or torch.all(ours == 0), f"{name}: a gradient where Norse has none"
            continue
        assert ours is not None and ours.shape == reference.shape, name
        if not torch.isfinite(reference).all():  # Norse's "super" can overflow; then both do
            continue
        scale = float(reference.norm())
        error = gradient_error(ours, reference) if scale > 1e-6 else float((ours - reference).norm())
        assert error < GRADIENT_TOLERANCE, f"{name}: relative error {error:.3g} (norm {scale:.3g})"


@SETTINGS
@given(simulations())
def test_the_kernels_compute_what_norse_computes(arguments):
    x, w_in, w_rec, p, dt, state = arguments
    x, w_in, w_rec, state = require_grad(x, w_in, w_rec, state)
    check(compare_gradients("numba", x, w_in, w_rec, p, dt, state, chain_loss))


@SETTINGS
@given(simulations(), st.data())
def test_a_run_continues_from_its_returned_final_state(arguments, data):
    """The state the kernels return continues the run as Norse's loop continues it: the second run
    starts from the first run's final state (computed by the kernels, so both backends start alike)."""
    x, w_in, w_rec, p, dt, state = arguments
    cut = data.draw(st.integers(0, x.shape[0] - 1), label="cut")
    with torch.no_grad():
        first = engine.lif_refrac_sequence(x[:cut + 1], w_in, w_rec, p, dt, state, backend="numba")
    x2, w_in, w_rec, middle = require_grad(x[cut + 1:] if cut + 1 < x.shape[0] else x[-1:], w_in, w_rec, first[4])
    check(compare_gradients("numba", x2, w_in, w_rec, p, dt, middle, chain_loss))
    whole = engine.lif_refrac_sequence(x, w_in.detach(), w_rec.detach(), p, dt, state, backend="numba")
    if cut + 1 < x.shape[0]:
        second = engine.lif_refrac_sequence(x[cut + 1:], w_in.detach(), w_rec.detach(), p, dt, first[4], "numba")
        for index in range(4):  # the kernels' own continuation is exact
            assert torch.equal(torch.cat([first[index], second[index]]), whole[index].detach())


@SETTINGS
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12), st.integers(1, 40))
def test_spike_lists_of_any_density_are_complete(sizes, T):
    """The lists (one int32 per non-zero input) hold every non-zero input, whatever the density and
    the values, and the AVX2 scan (where this CPU has AVX2) writes the same lists as the scalar one."""
    from workshop_utils.engine import cpu, simd

    scans = [cpu._spike_lists]
    if simd.AVX2:
        scans.append(lambda *arguments: cpu._spike_lists_avx2(*arguments, simd.permutations()))
    generator = np.random.default_rng(len(sizes) * 1000 + T)
    for H in sizes:
        x = (generator.random((T, 2, H)) < generator.random()).astype(np.float32)
        if generator.random() < 0.3:
            x *= generator.standard_normal(x.shape).astype(np.float32)  # not 0/1
        results = []
        for scan in scans:
            indices = np.full(x.size, -1, np.int32)
            starts, stops = np.empty((T, 2), np.int64), np.empty((T, 2), np.int64)
            cut = T // 2
            binary = scan(x, 0, cut, indices, starts, stops) & scan(x, cut, T, indices, starts, stops)
            words = x.view(np.uint32)  # -0.0 is listed too (it adds -0 W = ±0, which changes no sum)
            assert binary == bool(np.all((words == 0) | (x == 1)))
            lists = [indices[starts[t, b]:stops[t, b]].copy() for t in range(T) for b in range(2)]
            for (t, b), listed in zip([(t, b) for t in range(T) for b in range(2)], lists):
                assert np.array_equal(listed, np.flatnonzero(words[t, b]))
            results.append((binary, lists))
        assert all(result[0] == results[0][0] for result in results)
