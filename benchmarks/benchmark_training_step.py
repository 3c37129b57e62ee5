"""Seconds per training step (forward, BPTT, Adam) of backend "norse" and "fast", side by side.

    python benchmarks/benchmark_training_step.py          # T = 1000; H = 256 and 1024; both input densities
    python benchmarks/benchmark_training_step.py --timesteps 250 1000 4000 --inputs 256 --density workshop

Input densities: "workshop" is the notebooks' Poisson input (rate 0.3 = 30 Hz, 0.03 spikes per step
and input), "dense" is Bernoulli input with 0.3 spikes per step and input. The CPU model and its
vector instructions (AVX2 or AVX-512) are printed first, with the load average before and after: a
speed-up measured while other processes compete for the cores is not the machine's.

Both backends run in this one process with interleaved repetitions (norse, fast, norse, fast, ...;
9 by default, fewer of Norse's slow steps at T > 1000); the table shows the median. A second table
splits the fast path's step into its phases, with the time of its kernels. Peak memory is
measured separately, one fresh subprocess per backend and T: the growth of the process's peak
resident set (Linux VmHWM, reset through /proc/self/clear_refs; ``ru_maxrss`` where that is
unavailable) over the first training step, from the resident set just before it, with imports,
model, input and numba kernels in place -- i.e. the extra host memory a step needs at its peak
(tensors, autograd graph, allocator slack), not the Python/torch baseline.
The cold first call of the fast path (numba compiling into an empty NUMBA_CACHE_DIR) and the warm one
(loading from that cache) are timed in fresh subprocesses too.

Both backends run in the environment the script is started in. The fast path runs its kernels on
torch's own OpenMP threads where it can (the "runner" printed first; see workshop_utils.engine.parallel).
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workshop_utils import RefractoryLIFNetwork, notebook_parameters, poisson_input  # noqa: E402
from workshop_utils.training import training_step  # noqa: E402


DENSITIES = {"workshop": "Poisson, 0.03 spikes/step/input", "dense": "Bernoulli, 0.3 spikes/step/input"}


def input_spikes(density, T, B, H, seed):
    """[T, B, H] input of one of the :data:`DENSITIES`."""
    generator = torch.Generator().manual_seed(seed)
    if density == "workshop":
        return poisson_input(0.3, T, B, H, generator)
    return (torch.rand(T, B, H, generator=generator) < 0.3).float()


def cpu_description() -> str:
    """The CPU model (lscpu's "Model name", from /proc/cpuinfo), its widest vector instructions, the cores."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "?"
    return f"{model}, {vectors}, {os.cpu_count()} logical cores"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "?"


def training_setup(backend, T, B, N, H, k, device, seed=0, density="workshop"):
    """(network, optimizer, input [T, B, H], target [B, 2**k]) of one benchmark case, from ``seed``."""
    torch.manual_seed(seed)
    network = RefractoryLIFNetwork(H, N, notebook_parameters(), backend=backend).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    x = input_spikes(density, T, B, H, seed).to(device)
    target = torch.softmax(torch.randn(2**k, generator=torch.Generator().manual_seed(seed)), 0).to(device)
    return network, optimizer, x, target.expand(B, -1)


def make_step(backend, T, B, N, H, k, device, seed=0, density="workshop"):
    """A closure running one training step on fixed weights, input and target."""
    network, optimizer, x, target = training_setup(backend, T, B, N, H, k, device, seed, density)

    def step():
        loss = training_step(network, optimizer, x, target, k).loss.item()  # .item() waits for a GPU too
        return loss

    return step


def phase_times(T, B, N, H, k, device, repeats, seed=0, density="workshop"):
    """Median milliseconds of the fast path's phases of a training step: the forward pass (of which
    the kernels listing the input spikes and iterating the step), the readout and loss, the backward
    pass (of which the BPTT kernel), and Adam."""
    from workshop_utils.engine import cpu
    from workshop_utils.distribution import joint_distribution, kl_loss

    network, optimizer, x, target = training_setup("fast", T, B, N, H, k, device, seed, density)
    kernels = {}
    run_in_parallel = cpu.in_parallel

    def timed_kernels(calls):
        start = time.perf_counter()
        results = run_in_parallel(calls)
        kernels.setdefault(calls[0][0].__name__, []).append(time.perf_counter() - start)
        return results

    phases = {"forward": [], "loss": [], "backward": [], "adam": []}
    cpu.in_parallel = timed_kernels
    try:
        for rep in range(repeats + 1):  # the first is a warm-up
            marks = [time.perf_counter()]
            optimizer.zero_grad()
            refractory, _ = network(x)
            marks.append(time.perf_counter())
            loss = kl_loss(joint_distribution(refractory[:, :, :k]), target)
            marks.append(time.perf_counter())
            loss.backward()
            marks.append(time.perf_counter())
            optimizer.step()
            loss.item()
            marks.append(time.perf_counter())
            if rep == 0:
                kernels.clear()
                continue
            for name, start, stop in zip(phases, marks, marks[1:]):
                phases[name].append(stop - start)
    finally:
        cpu.in_parallel = run_in_parallel
    median = {name: 1e3 * statistics.median(values) for name, values in phases.items()}
    for kernel, values in kernels.items():  # the scan's name says which variant ran (_spike_lists_avx2 ...)
        median["lists" if kernel.startswith("_spike_lists") else kernel] = 1e3 * statistics.median(values)
    return median


def timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def status_mib(field):
    """A field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory_child(backend, T, B, N, H, k, device, density):
    """Runs in a subprocess: growth of the peak resident set (MiB) over the first training step,
    measured from the resident set just before it, with model, input and numba kernels loaded."""
    from workshop_utils import engine

    engine.fast_path_available()  # loads (or compiles) the kernels outside the measurement
    step = make_step(backend, T, B, N, H, k, device, density=density)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        before = status_mib("VmRSS")
    except OSError:  # no /proc: fall back to the high-water mark, which may hide a lower step peak
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step()
    try:
        peak = status_mib("VmHWM")
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak - before, before


def first_call_child(T):
    """Runs in a subprocess: seconds to import the package and run the fast path's first forward + backward."""
    start = time.perf_counter()
    from workshop_utils import engine

    network = RefractoryLIFNetwork(256, 32, notebook_parameters(), backend="fast")
    _, voltages = network(poisson_input(0.3, T, 32, 256))
    voltages.sum().backward()
    return time.perf_counter() - start, engine.fast_path_available()


def run_child(args, env=None):
    command = [sys.executable, __file__, "--threads", str(torch.get_num_threads()), "--child", json.dumps(args)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1000])
    parser.add_argument("--inputs", type=int, nargs="+", default=[256, 1024], help="H, noise sources")
    parser.add_argument("--density", nargs="+", choices=sorted(DENSITIES), default=["workshop", "dense"])
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per backend at T <= 1000")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--neurons", type=int, default=32)
    parser.add_argument("--k", type=int, default=3, help="readout variables")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the fast path's per-phase times")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        task = json.loads(args.child)
        result = peak_memory_child(*task["memory"]) if "memory" in task else first_call_child(task["first_call"])
        print(json.dumps(result))
        return

    from workshop_utils import engine
    from workshop_utils.engine import parallel

    B, N, k, device = args.batch, args.neurons, args.k, args.device
    print(f"CPU: {cpu_description()}; load average (1, 5, 15 min) before: {load_average()}")
    print(f"B={B}, N={N}, k={k}, device={device}; torch threads: {torch.get_num_threads()} "
          f"({'set by --threads' if args.threads else 'torch default'}), runner: {parallel.runner()}, "
          f"fast path available: {engine.fast_path_available()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(not set)')}")
    cases = [(density, H, T) for density in args.density for H in args.inputs for T in args.timesteps]
    print()
    print("| input | H | T | norse s/step | fast s/step | speed-up | reps (norse/fast) | norse peak MiB | fast peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for density, H, T in cases:
        steps = {backend: make_step(backend, T, B, N, H, k, device, density=density) for backend in ("norse", "fast")}
        # the Norse loop takes seconds per step at T >= 4000: fewer repetitions there
        reps = {"norse": max(1, min(args.repeats, args.repeats * 1000 // T)), "fast": args.repeats}
        steps["fast"]()  # warm-up: allocator, kernel dispatch
        if T <= 1000:
            steps["norse"]()
        times = {"norse": [], "fast": []}
        for rep in range(args.repeats):
            for backend in ("norse", "fast"):
                if rep < reps[backend]:
                    times[backend].append(timed(steps[backend]))
        norse, fast = (statistics.median(times[backend]) for backend in ("norse", "fast"))
        memory = {}
        for backend in ("norse", "fast"):
            if args.no_memory:
                memory[backend] = "-"
            else:
                grown, _ = run_child({"memory": [backend, T, B, N, H, k, device, density]})
                memory[backend] = f"{grown:.0f}"
        print(f"| {density} | {H} | {T} | {norse:.4f} | {fast:.4f} | {norse / fast:.1f}x | {reps['norse']}/{reps['fast']} "
              f"| {memory['norse']} | {memory['fast']} |", flush=True)

    if not args.no_breakdown:
        print()
        print("Fast path, median ms per phase of a step (forward and backward include their kernels: the spike "
              "lists and the step in the forward pass, BPTT in the backward pass):")
        print()
        print("| input | H | T | forward | lists | step | readout + KL | backward | BPTT | Adam |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for density, H, T in cases:
            ms = phase_times(T, B, N, H, k, device, args.repeats, density=density)
            print(f"| {density} | {H} | {T} | {ms['forward']:.1f} | {ms.get('lists', 0):.1f} "
                  f"| {ms.get('_forward', 0):.1f} | {ms['loss']:.1f} | {ms['backward']:.1f} "
                  f"| {ms.get('_backward', 0):.1f} | {ms['adam']:.1f} |", flush=True)

    print()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold, available = run_child({"first_call": 250}, env)
        warm, _ = run_child({"first_call": 250}, env)
    default, _ = run_child({"first_call": 250})
    print(f"First call of the fast path in a fresh process (import + T=250 forward/backward), numba available: "
          f"{available}:")
    print(f"  cold (empty NUMBA_CACHE_DIR): {cold:.2f} s; warm (same cache dir): {warm:.2f} s; "
          f"default cache location: {default:.2f} s")
    print(f"Load average after: {load_average()}")


if __name__ == "__main__":
    main()
