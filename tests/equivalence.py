"""Comparing an engine backend's run with the reference (Norse's loop) so that the test holds on any CPU.

Two correct implementations of the same float32 step add the same numbers in different orders (MKL
picks its kernels by instruction set, a GPU sums in another order again), so their voltages differ
by rounding, about 1e-7 per step. A neuron whose membrane lands within that rounding of its threshold
may spike in one run and not in the other; from there on that chain's trajectory differs entirely
(the dynamics are chaotic). Such a *flip* is not an error, and a tolerance cannot hide it, so the
comparison below finds each chain's first flip, checks that it happened at threshold (the
non-spiking run's voltage, which is then the decayed voltage, lies within ``flip_tolerance`` of
``v_th``), compares everything before it, and reports it.

Chains are independent (the batch is never mixed), so a weight gradient can still be compared on
the chains that did not flip: :func:`unflipped` gives them, and a loss summed over them alone has
the same gradient in both runs up to float rounding.
"""

from typing import NamedTuple, Sequence

import torch

VOLTAGE_TOLERANCE = 1e-4  # the bound; the measured differences before a flip are about 1e-6
FLIP_TOLERANCE = 1e-5  # a flip must happen this close to threshold: 100x the rounding differences seen


class Comparison(NamedTuple):
    flips: list  # (t, b, n, voltage of the non-spiking run) of each chain's first flip
    compared_steps: int  # chain-steps compared, before each chain's first flip
    total_steps: int  # T x B


def first_flips(spikes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each chain b of ``[T, B, N]`` spikes, the first step at which any neuron's spike differs
    from ``reference`` (T where none does), ``[B]``."""
    T = spikes.shape[0]
    differs = (spikes != reference).any(dim=2)  # [T, B]
    steps = torch.arange(T, device=spikes.device).unsqueeze(1).expand_as(differs)
    return torch.where(differs, steps, torch.full_like(steps, T)).min(dim=0).values


def compare_runs(ours: Sequence[torch.Tensor], reference: Sequence[torch.Tensor], v_th,
                 voltage_tolerance: float = VOLTAGE_TOLERANCE, flip_tolerance: float = FLIP_TOLERANCE) -> Comparison:
    """Compare (spikes, rho, voltages), each ``[T, B, N]``, of a backend and of the reference.

    Before each chain's first flip: spikes and refractory counters identical, voltages within
    ``voltage_tolerance``. At the flip: every neuron that flipped was at threshold (see the module
    docstring). ``v_th`` is a number or a tensor that broadcasts to ``[B, N]`` (per neuron: ``[N]``).
    Raises AssertionError otherwise.
    """
    spikes, rho, voltages = (tensor.detach().cpu() for tensor in ours)
    spikes_ref, rho_ref, voltages_ref = (tensor.detach().cpu() for tensor in reference)
    T, B, N = spikes.shape
    v_th = torch.as_tensor(v_th, dtype=voltages.dtype).detach().cpu().expand(B, N)
    flip_at = first_flips(spikes, spikes_ref)
    flips = []
    for b in range(B):
        t = int(flip_at[b])
        same = slice(0, t)
        assert torch.equal(spikes[same, b], spikes_ref[same, b])
        mismatch = (rho[same, b] != rho_ref[same, b]).nonzero()
        assert len(mismatch) == 0, f"chain {b}: refractory counters differ first at [t, n] = {mismatch[0].tolist()}"
        if t > 0:
            difference = (voltages[same, b] - voltages_ref[same, b]).abs().max().item()
            assert difference <= voltage_tolerance, f"chain {b}: voltages differ by {difference:.3g} before any flip"
        if t < T:
            for n in (spikes[t, b] != spikes_ref[t, b]).nonzero().flatten().tolist():
                quiet = voltages[t, b, n] if spikes[t, b, n] == 0 else voltages_ref[t, b, n]
                distance = abs(float(quiet) - float(v_th[b, n]))
                assert distance <= flip_tolerance, (
                    f"chain {b}, neuron {n} spikes in one run only at t = {t}, {distance:.3g} from threshold: "
                    "not a rounding flip")
                flips.append((t, b, n, float(quiet)))
    return Comparison(flips, int(flip_at.sum()), T * B)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def unflipped(comparison: Comparison, batch_size: int) -> torch.Tensor:
    """``[B]`` bool: the chains in which no spike flipped."""
    keep = torch.ones(batch_size, dtype=torch.bool)
    for _, b, _, _ in comparison.flips:
        keep[b] = False
    return keep


def gradient_error(value, reference) -> float:
    """||value - reference|| / ||reference|| (0 if both are zero, inf if only the reference is)."""
    if value is None or reference is None:
        return 0.0 if value is None and reference is None else float("inf")
    difference = float((value - reference).norm())
    scale = float(reference.norm())
    return difference / scale if scale > 0 else (0.0 if difference == 0 else float("inf"))


class Gradients(NamedTuple):
    comparison: Comparison
    ours: dict  # name -> gradient (None where none arrived)
    reference: dict
    kept: int  # chains whose loss was back-propagated: those without a flip


def compare_gradients(backend, input_spikes, input_weights, recurrent_weights, p, dt, state, chain_loss,
                      reference="norse") -> Gradients:
    """Run ``backend`` and ``reference`` on the same arguments from fresh copies of every tensor that
    requires grad, compare their runs (:func:`compare_runs`) and back-propagate ``chain_loss(rho,
    refractory, voltages, final_state)`` (one value per chain, ``[B]``) summed over the chains that
    did not flip. Returns both sets of gradients: of the weights, the input and the state fields."""
    from workshop_utils.engine import lif_refrac_sequence
    from norse.torch.functional.lif import LIFState
    from norse.torch.functional.lif_refrac import LIFRefracState

    def fresh(tensor):
        return tensor.detach().clone().requires_grad_(True) if tensor.requires_grad else tensor

    runs, leaves = [], []
    for name in (backend, reference):
        tensors = dict(input_spikes=fresh(input_spikes), input_weights=fresh(input_weights),
                       recurrent_weights=fresh(recurrent_weights), z=fresh(state.lif.z), v=fresh(state.lif.v),
                       i=fresh(state.lif.i), rho=fresh(state.rho))
        run_state = LIFRefracState(LIFState(tensors["z"], tensors["v"], tensors["i"]), tensors["rho"])
        runs.append(lif_refrac_sequence(tensors["input_spikes"], tensors["input_weights"],
                                        tensors["recurrent_weights"], p, dt, run_state, backend=name))
        leaves.append(tensors)
    (spikes, rho, refractory, voltages, final), (spikes_ref, rho_ref, refractory_ref, voltages_ref, final_ref) = runs
    comparison = compare_runs((spikes, rho, voltages), (spikes_ref, rho_ref, voltages_ref), p.lif.v_th)
    keep = unflipped(comparison, spikes.shape[1])
    grads = []
    for (_, rho_b, refractory_b, voltages_b, final_b), tensors in zip(runs, leaves):
        loss = (chain_loss(rho_b, refractory_b, voltages_b, final_b) * keep).sum()
        wanted = {name: tensor for name, tensor in tensors.items() if tensor.requires_grad}
        if loss.requires_grad and wanted:
            values = torch.autograd.grad(loss, list(wanted.values()), allow_unused=True)
        else:
            values = [None] * len(wanted)
        grads.append(dict(zip(wanted, values)))
    return Gradients(comparison, grads[0], grads[1], int(keep.sum()))
