"""The GPU table: seconds per training step of Norse's loop on CUDA, the triton backend and the CPU fast path.

    python benchmarks/benchmark_gpu.py                                  # B = 32, 1024, 8192; T = 1000, 4000
    python benchmarks/benchmark_gpu.py --batches 32 --timesteps 1000    # one row
    python benchmarks/benchmark_gpu.py --no-norse --no-cpu              # the triton backend alone

Prints nothing but a note without CUDA. With it, on ``cuda:0``:

1. the GPU, CPU and versions; the first triton training step of the process (compiling its kernels,
   or loading them from Triton's on-disk cache) and the loss of one step of each backend from the
   same weights and input (they differ by rounding only);
2. the table, one row per (B, T), N = 32, H = 1024, k = 3, Poisson input at the workshop's rate,
   a training step = forward, readout, KL, BPTT, Adam (``workshop_utils.training.training_step``),
   median of the repetitions. Peak GPU memory is what a step allocates above the input and the
   model (``torch.cuda.max_memory_allocated``); the input ``[T, B, H]`` float32 is given apart, and a
   row whose input cannot be made on this GPU is marked so. The CPU fast path runs on all of this
   machine's cores, for B <= --cpu-max-batch (its time grows with B);
3. where the triton step's time goes at T = 1000 (phases, and the CUDA kernels by torch's profiler),
   and the step at other block sizes and warp counts of the kernels (to choose the defaults);
4. the workshop's recipe, ``wu.train(wu.ExperimentConfig(device="cuda:0"))`` (80 epochs, target
   generation included), and the long-run evaluation (``evaluation.long_run_distribution``, 32
   chains x 20,000 steps), each timed after one warm-up run;
5. the issue's goals (on an H100/H200) against these numbers.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import workshop_utils as wu  # noqa: E402
from workshop_utils import RefractoryLIFNetwork, notebook_parameters, poisson_input  # noqa: E402
from workshop_utils.distribution import kl_per_chain  # noqa: E402
from workshop_utils.evaluation import long_run_distribution  # noqa: E402
from workshop_utils.training import training_step  # noqa: E402

DEVICE = "cuda:0"
GIB = 2**30
GOALS = {  # the goals on an H100/H200, seconds
    "step, B = 32, T = 1000": 5e-3,
    "step, B = 8192, T = 1000": 50e-3,
    "recipe (80 epochs)": 2.0,
    "long-run evaluation": 0.5,
}


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def case(backend, x, target, N, k, device, seed=0):
    """A closure for one training step of a fresh network (weights from ``seed``) on input ``x``."""
    torch.manual_seed(seed)
    H = x.shape[2]
    network = RefractoryLIFNetwork(H, N, notebook_parameters(), backend=backend).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step():
        return training_step(network, optimizer, x, target, k).loss.item()  # .item() waits for the GPU

    return step


def median_seconds(step, repeats, warmup=0):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_on_gpu(step, repeats):
    """(median seconds, peak GiB a step allocates above what was allocated before it)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(step, repeats)
    return seconds, (torch.cuda.max_memory_allocated() - before) / GIB


def gpu_input(T, B, H, seed=0):
    """Poisson input [T, B, H] on the GPU (drawn there), or None if it cannot be made here."""
    free, _ = torch.cuda.mem_get_info()
    needed = 2.5 * T * B * H * 4  # the input, and Norse's poisson_encode's uniform draws and mask
    if needed > 0.9 * free:
        return None
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    return poisson_input(0.3, T, B, H, generator, DEVICE)


def header():
    import triton

    properties = torch.cuda.get_device_properties(0)
    print(f"GPU: {properties.name}, {properties.total_memory / GIB:.0f} GiB, {properties.multi_processor_count} SMs; "
          f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, triton {triton.__version__}, python {platform.python_version()}; "
          f"TF32 matmuls: {torch.backends.cuda.matmul.allow_tf32}")


def first_step_and_losses(N, H, k, T=1000, B=32):
    """Seconds of the first triton step of the process, and one step's loss of each backend."""
    x = gpu_input(T, B, H, seed=1)
    target = torch.softmax(torch.randn(2**k, generator=torch.Generator().manual_seed(1)), 0).to(DEVICE).expand(B, -1)
    start = time.perf_counter()
    triton_loss = case("fast", x, target, N, k, DEVICE, seed=1)()
    first = time.perf_counter() - start
    norse_loss = case("norse", x, target, N, k, DEVICE, seed=1)()
    print(f"First triton training step in this process (T = {T}, B = {B}; compiles its kernels or loads them from "
          f"Triton's cache): {first:.2f} s")
    print(f"Loss of one step from the same weights and input: triton {triton_loss:.6f}, Norse's loop on CUDA "
          f"{norse_loss:.6f} (relative difference {abs(triton_loss - norse_loss) / abs(norse_loss):.1e})")


def table(args):
    """Print the table; returns {(B, T): triton seconds per step}."""
    N, H, k = args.neurons, args.inputs, args.k
    print()
    print(f"Seconds per training step (N = {N}, H = {H}, k = {k}); speed-ups of the triton backend; peak GPU memory "
          "a step allocates above its input and model:")
    print()
    print("| B | T | Norse's loop, CUDA | triton | CPU fast path | vs Norse | vs CPU | triton GiB | Norse GiB "
          "| input GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for T in args.timesteps:
        for B in args.batches:
            seconds = guarded(table_row, args, T, B)
            if seconds is not None:
                results[(B, T)] = seconds
            torch.cuda.empty_cache()
    return results


def cell(value, fmt="{:.4f}"):
    return "–" if value is None else fmt.format(value)


def table_row(args, T, B):
    """Measure and print one row; returns the triton backend's seconds per step (None if not run)."""
    N, H, k = args.neurons, args.inputs, args.k
    x = gpu_input(T, B, H)
    input_gib = T * B * H * 4 / GIB
    if x is None:
        print(f"| {B} | {T} | – | – | – | | | | | {input_gib:.1f}: does not fit with its Poisson draws |", flush=True)
        return None
    target = torch.full((B, 2**k), 1 / 2**k, device=DEVICE)
    repeats = max(3, min(args.repeats, int(args.repeats * 32_000 / (T * B)) + 3))
    step = case("fast", x, target, N, k, DEVICE)
    step()  # warm-up: a new shape's allocations, the kernels compiled once per process
    triton_s, triton_gib = timed_on_gpu(step, repeats)
    del step
    norse_s = norse_gib = None
    if not args.no_norse:
        step = case("norse", x, target, N, k, DEVICE)
        norse_s, norse_gib = timed_on_gpu(step, args.norse_repeats)
        del step
    cpu_s = None
    if not args.no_cpu and B <= args.cpu_max_batch:
        x_cpu, target_cpu = x.cpu(), target.cpu()
        del x
        cpu_s = guarded(median_seconds, case("fast", x_cpu, target_cpu, N, k, "cpu"), args.cpu_repeats, 1)
    print(f"| {B} | {T} | {cell(norse_s)} | {triton_s:.4f} | {cell(cpu_s)} "
          f"| {cell(norse_s and norse_s / triton_s, '{:.0f}x')} | {cell(cpu_s and cpu_s / triton_s, '{:.1f}x')} "
          f"| {triton_gib:.2f} | {cell(norse_gib, '{:.2f}')} | {input_gib:.2f} |", flush=True)
    return triton_s


def breakdown(N, H, k, batches, T=1000, repeats=10):
    """Median milliseconds per phase of the triton step, and its CUDA kernels (torch's profiler)."""
    from workshop_utils.distribution import joint_distribution, kl_loss

    print()
    print(f"Where the triton step goes at T = {T}: median ms per phase (each phase waited for), and the GPU kernels "
          "of one step:")
    for B in batches:
        x = gpu_input(T, B, H)
        if x is None:
            continue
        torch.manual_seed(0)
        network = RefractoryLIFNetwork(H, N, notebook_parameters()).to(DEVICE)
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        target = torch.full((B, 2**k), 1 / 2**k, device=DEVICE)
        phases = {"forward": [], "readout + KL": [], "backward": [], "Adam": []}
        for rep in range(repeats + 1):
            marks = [time.perf_counter()]
            optimizer.zero_grad()
            refractory, _ = network(x)
            torch.cuda.synchronize()
            marks.append(time.perf_counter())
            loss = kl_loss(joint_distribution(refractory[:, :, :k]), target)
            torch.cuda.synchronize()
            marks.append(time.perf_counter())
            loss.backward()
            torch.cuda.synchronize()
            marks.append(time.perf_counter())
            optimizer.step()
            torch.cuda.synchronize()
            marks.append(time.perf_counter())
            if rep:
                for name, start, stop in zip(phases, marks, marks[1:]):
                    phases[name].append(stop - start)
        print(f"\nB = {B}: " + ", ".join(f"{name} {1e3 * statistics.median(v):.2f}" for name, v in phases.items()))
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        try:
            with torch.profiler.profile(activities=activities) as profile:
                training_step(network, optimizer, x, target, k).loss.item()
            print(profile.key_averages().table(sort_by="self_device_time_total", row_limit=12))
        except Exception as error:  # the profiler is a diagnosis: its failure must not end the benchmark
            print(f"(torch's profiler failed: {type(error).__name__}: {error})")
        del x
        torch.cuda.empty_cache()


def sweep(N, H, k, batches, T=1000, repeats=10):
    """Seconds per triton step for other block sizes and warp counts than the defaults (N = 32)."""
    from workshop_utils.engine import gpu

    default = gpu.launch_config
    block_n = default(N).block_n
    configs = [gpu.LaunchConfig(block_b, block_n, block_n, True, warps)
               for block_b, warps in ((16, 2), (16, 4), (16, 8), (32, 4), (32, 8), (64, 8))]
    inputs = {B: gpu_input(T, B, H) for B in batches}
    print()
    print(f"Launch configurations of the triton kernels (N = {N}, T = {T}), seconds per training step; "
          f"the default is {default(N)}:")
    print()
    print("| chains per program | warps | " + " | ".join(f"B = {B}" for B in batches) + " |")
    print("|---:|---:|" + "---:|" * len(batches))
    try:
        for config in configs:
            gpu.launch_config = lambda neurons, config=config: config
            cells = []
            for B, x in inputs.items():
                target = torch.full((B, 2**k), 1 / 2**k, device=DEVICE)
                step = case("fast", x, target, N, k, DEVICE)
                step()  # compiles this configuration's kernels
                cells.append(f"{median_seconds(step, repeats if B * T <= 32_000 else 3):.4f}")
            print(f"| {config.block_b} | {config.num_warps} | " + " | ".join(cells) + " |", flush=True)
    finally:
        gpu.launch_config = default
    del inputs
    torch.cuda.empty_cache()


def recipe_and_evaluation():
    """Seconds of the recipe (wu.train, 80 epochs, with its target) and of the long-run evaluation."""
    config = wu.ExperimentConfig(device=DEVICE)
    times = {}
    for attempt in ("warm-up", "timed"):
        start = time.perf_counter()
        result = wu.train(config, progress=False)
        torch.cuda.synchronize()
        times["recipe"] = time.perf_counter() - start
        times["training loop"] = result.seconds
        start = time.perf_counter()
        p_target = wu.target_for(config)
        torch.cuda.synchronize()
        times["target generation"] = time.perf_counter() - start
        start = time.perf_counter()
        p_long_run = long_run_distribution(result.model, config.k,
                                           generator=torch.Generator(device=DEVICE).manual_seed(0))
        torch.cuda.synchronize()
        times["long-run evaluation"] = time.perf_counter() - start
        if attempt == "warm-up":
            first = dict(times)
    kl = kl_per_chain(p_long_run.unsqueeze(0), p_target[0]).item()
    print()
    print("The workshop's recipe on the GPU (ExperimentConfig(device='cuda:0'): H = 1024, N = 32, B = 32, T = 1000, "
          "80 epochs), seconds, after one warm-up run (first run in brackets):")
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.2f} ({first[name]:.2f})")
    print(f"  final loss {result.losses[-1]:.4f}, long-run KL to the target {kl:.5f} "
          "(the CPU recipe reaches 0.0004-0.0015: README)")
    return times


def guarded(part, *args):
    """``part(*args)``; an exception is printed with its traceback and the benchmark goes on with its
    other parts (a GPU session has one try), returning None."""
    try:
        return part(*args)
    except Exception:
        print(f"\n{part.__name__} failed:")
        traceback.print_exc(file=sys.stdout)
        torch.cuda.empty_cache()
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1024, 8192])
    parser.add_argument("--neurons", type=int, default=32)
    parser.add_argument("--inputs", type=int, default=1024)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="triton steps timed per row at B x T <= 32,000")
    parser.add_argument("--norse-repeats", type=int, default=1, help="Norse steps timed per row (seconds each)")
    parser.add_argument("--cpu-repeats", type=int, default=2)
    parser.add_argument("--cpu-max-batch", type=int, default=1024, help="largest B the CPU fast path runs")
    parser.add_argument("--no-norse", action="store_true")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--no-recipe", action="store_true")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="skip the launch configurations at N = 32")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("CUDA is not available here: the GPU table needs a CUDA GPU (nothing measured).")
        return
    header()
    guarded(first_step_and_losses, args.neurons, args.inputs, args.k)
    steps = guarded(table, args) or {}
    large = [B for B in (32, 8192) if B in args.batches]
    if not args.no_breakdown:
        guarded(breakdown, args.neurons, args.inputs, args.k, large)
    if not args.no_sweep and args.neurons == 32:
        guarded(sweep, args.neurons, args.inputs, args.k, large)
    times = {} if args.no_recipe else guarded(recipe_and_evaluation) or {}
    measured = {
        "step, B = 32, T = 1000": steps.get((32, 1000)),
        "step, B = 8192, T = 1000": steps.get((8192, 1000)),
        "recipe (80 epochs)": times.get("recipe"),
        "long-run evaluation": times.get("long-run evaluation"),
    }
    print()
    print("The issue's goals on an H100/H200:")
    for name, goal in GOALS.items():
        value = measured[name]
        verdict = "not measured" if value is None else ("met" if value <= goal else "MISSED")
        shown = "–" if value is None else f"{value:.4f} s"
        print(f"  {name}: {shown} (goal <= {goal:g} s): {verdict}")


if __name__ == "__main__":
    main()
