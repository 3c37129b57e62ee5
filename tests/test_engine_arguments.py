"""workshop_utils.engine.arguments: arguments that do not fit together are refused before any kernel runs.

The numba kernels check no bounds: a state or weight of the wrong size would crash the process
(SIGSEGV) or return garbage. Every backend gets the same ValueError, naming the argument and the
shape it must have.
"""

import pytest
import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from workshop_utils import RefractoryLIFNetwork, engine, notebook_parameters, poisson_input

T, B, H, N = 5, 3, 4, 2


def good():
    """Arguments of one call that fit together: input [T, B, H], weights [N, H] and [N, N], state [B, N]."""
    zeros = torch.zeros(B, N)
    return dict(input_spikes=torch.ones(T, B, H), input_weights=torch.ones(N, H), recurrent_weights=torch.ones(N, N),
                p=notebook_parameters(), dt=1e-3,
                state=LIFRefracState(LIFState(zeros, torch.full((B, N), 0.9), zeros), zeros))


def with_state(**fields):
    state = good()["state"]
    lif = state.lif._replace(**{name: value for name, value in fields.items() if name != "rho"})
    return LIFRefracState(lif, fields.get("rho", state.rho))


def with_lif(**changes):
    return LIFRefracParameters(notebook_parameters().lif._replace(**changes), torch.tensor(10.0))


BAD = [
    (dict(input_spikes=torch.ones(T, B)), r"input_spikes must have shape \[T, B, H\]"),
    (dict(input_spikes=torch.ones(0, B, H)), "T, B, H >= 1"),
    (dict(input_spikes=torch.ones(T, B, H, dtype=torch.int64)), "input_spikes must be a floating-point"),
    (dict(input_spikes=[[[1.0]]]), "input_spikes must be a torch.Tensor"),
    (dict(input_weights=torch.ones(N, 16)), r"input_weights must have shape \[N, H\] = \[N, 4\]"),
    (dict(input_weights=torch.ones(N, H, dtype=torch.float64)), "input_weights must have the dtype"),
    (dict(recurrent_weights=torch.ones(N, N + 1)), r"recurrent_weights must have shape \[N, N\] = \[2, 2\]"),
    (dict(state=with_state(z=torch.zeros(2, N))), r"state.lif.z must be a tensor of shape \[B, N\] = \[3, 2\]"),
    (dict(state=with_state(v=torch.zeros(B + 2, N))), r"state.lif.v must .* \[B, N\] = \[3, 2\]"),
    (dict(state=with_state(i=torch.zeros(B, 4))), r"state.lif.i must .* \[B, N\] = \[3, 2\]"),
    (dict(state=with_state(rho=torch.zeros(B, N, 1))), r"state.rho must .* \[B, N\] = \[3, 2\]"),
    (dict(state=with_state(v=0.9)), "state.lif.v must be a tensor"),
    (dict(state=with_state(v=torch.zeros(B, N, dtype=torch.float64))), "state.lif.v must have the dtype"),
    (dict(state=with_state(v=torch.zeros(B, N, device="meta"))), "state.lif.v must have the dtype and device"),
    (dict(state=(1, 2)), "state must be a LIFRefracState"),
    (dict(p=LIFParameters()), "p must be a LIFRefracParameters"),
    (dict(p=with_lif(method="sigmoid")), "p.lif.method must be one of"),
    (dict(p=with_lif(v_th=torch.ones(N + 1))), r"p.lif.v_th must be .* broadcasts to \[B, N\] = \[3, 2\]"),
    (dict(p=with_lif(tau_mem_inv="100")), "p.lif.tau_mem_inv must be a real number or a tensor"),
    (dict(p=with_lif(alpha=torch.ones(N, dtype=torch.float64))), "p.lif.alpha must be a number or a tensor whose"),
    (dict(p=LIFRefracParameters(LIFParameters(), torch.ones(B, 1, 1))), "p.rho_reset must be"),
    (dict(dt=torch.ones(4)), r"dt must be a number or a tensor that broadcasts"),
    (dict(dt=None), "dt must be a real number"),
]


@pytest.mark.parametrize("backend", engine.BACKENDS)
@pytest.mark.parametrize("changes, match", BAD, ids=[match for _, match in BAD])
def test_arguments_that_do_not_fit_are_refused_by_name(changes, match, backend):
    arguments = good()
    arguments.update(changes)
    with pytest.raises(ValueError, match=match):
        engine.lif_refrac_sequence(**arguments, backend=backend)


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        engine.lif_refrac_sequence(**good(), backend="cuda")


@pytest.mark.parametrize("changes", [
    dict(state=with_state(v=torch.tensor(0.9))),  # Norse's own initial state: v = v_leak, a scalar
    dict(state=with_state(z=torch.zeros(N), rho=torch.zeros(1, N))),
    dict(p=with_lif(v_th=torch.linspace(0.5, 1.5, N))),  # per neuron
    dict(p=with_lif(v_th=torch.ones(B, 1))),  # per chain
    dict(p=with_lif(alpha=torch.tensor(50.0, dtype=torch.float64))),  # a 0-d tensor does not promote
    dict(dt=torch.tensor(1e-3)),
], ids=["scalar v", "[N] z", "[N] v_th", "[B, 1] v_th", "float64 scalar alpha", "tensor dt"])
def test_what_norse_broadcasts_is_accepted(changes):
    arguments = good()
    arguments.update(changes)
    results = [engine.lif_refrac_sequence(**arguments, backend=backend) for backend in ("auto", "norse")]
    for ours, theirs in zip(*[result[:4] for result in results]):
        assert ours.shape == (T, B, N)
        torch.testing.assert_close(ours, theirs)


def test_the_network_refuses_a_state_for_another_batch_or_size():
    """Issue #12, defect 1: these crashed the process (exit code 139) or returned garbage. A state of
    one chain is not refused: Norse broadcasts it over the batch, and so do the kernels."""
    torch.manual_seed(0)
    model = RefractoryLIFNetwork(16, 4)
    x = poisson_input(0.3, 20, 64, 16, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"state.lif.z must be a tensor of shape \[B, N\] = \[5, 4\]"):
        model.trace(x[:, :5], model.initial_state(2, "cpu"))
    with pytest.raises(ValueError, match=r"\[B, N\] = \[5, 4\]"):
        model.trace(x[:, :5], RefractoryLIFNetwork(16, 2).initial_state(5, "cpu"))
    with pytest.raises(ValueError, match=r"input_spikes must have shape \[T, B, 16\]"):
        model.trace(torch.zeros(20, 5, 64))
    broadcast = model.trace(x, model.initial_state(1, "cpu"))
    model.backend = "norse"
    reference = model.trace(x, model.initial_state(1, "cpu"))
    assert broadcast.voltages.shape == (20, 64, 4)
    assert torch.equal(broadcast.spikes, reference.spikes)
    torch.testing.assert_close(broadcast.voltages, reference.voltages, rtol=0, atol=1e-5)
