"""The fidelity figures the README and the notebooks quote, measured by running the notebooks themselves.

    python benchmarks/notebook_figures.py            # everything (about 10 minutes on 2 cores)
    python benchmarks/notebook_figures.py --only recipe original

Each case runs notebooks with papermill, with the parameters shown, in a temporary folder (nothing in
the repository is written), and reads the numbers the notebooks print: notebook 3 (training) and 4
(long-run evaluation) for k = 3, notebook 5 for k = 5, notebook 11 for the Boltzmann target.

- ``recipe``: the workshop's recipe (the notebooks' defaults), seeds 0-4;
- ``original``: the original notebook's settings (H = 256, 40 epochs, constant learning rate 1e-3),
  seeds 0-4, each on the target of its own size;
- ``five``: notebook 5 (k = 5, T growing from 1000 to 4000), seeds 0-2, and with T = 1000 throughout;
- ``boltzmann``: notebook 11 at its defaults.
"""

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = Path(sys.executable).with_name("papermill")
PATTERNS = {  # what a notebook prints -> the number
    "final_loss": r"final (?:training )?loss ([0-9.]+)",
    "seconds": r"final (?:training )?loss [0-9.]+[^\n]*?([0-9.]+) s",
    "long_run_kl": r"(?:long-run KL\(p_t \|\| p_inf\)|exact KL\(p_boltzmann \|\| p_inf\) =)\s+([0-9.]+)",
    "noise_floor": r"noise floor (?:at T =\s+\d+|at the last T|of one training chain:)\s+([0-9.]+)",
}


def run_notebook(folder: Path, name: str, parameters: dict) -> str:
    """Execute notebooks/<name>.ipynb in ``folder`` with papermill; return its text outputs."""
    out = folder / f"{name}-{time.monotonic_ns()}.ipynb"
    arguments = [str(PAPERMILL), "--cwd", str(folder / "notebooks"), "--kernel", "python3", "--no-progress-bar",
                 "--log-output", str(folder / "notebooks" / f"{name}.ipynb"), str(out)]
    for key, value in parameters.items():
        arguments += ["-p", key, str(value)]
    done = subprocess.run(arguments, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise RuntimeError(f"{name} {parameters} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def numbers(text: str) -> dict:
    found = {}
    for key, pattern in PATTERNS.items():
        matches = re.findall(pattern, text)
        if matches:
            found[key] = float(matches[-1])
    return found


def cases(only):
    loose = {"loss_bound": 1, "kl_bound": 1}
    recipe = [(f"recipe seed {s}", [("03_training", {"seed": s, "results_name": f"r{s}", **loose}),
                                    ("04_evaluation", {"seed": s, "results_name": f"r{s}", **loose,
                                                       "figure_name": f"r{s}.png"})]) for s in range(5)]
    original_settings = {"H": 256, "epochs": 40, "learning_rate": 1e-3, "lr_schedule": "constant"}
    original = [(f"original seed {s}", [("03_training", {"seed": s, "results_name": f"o{s}", **original_settings,
                                                         **loose}),
                                        ("04_evaluation", {"seed": s, "results_name": f"o{s}", **loose,
                                                           "figure_name": f"o{s}.png"})]) for s in range(5)]
    five = [(f"k=5 seed {s}", [("05_five_variables", {"seed": s, "results_name": f"f{s}", "kl_bound": 1,
                                                      "figure_name": f"f{s}.png"})]) for s in range(3)]
    five += [(f"k=5 T=1000 seed {s}", [("05_five_variables", {"seed": s, "final_T": 1000, "results_name": f"g{s}",
                                                              "kl_bound": 1, "figure_name": f"g{s}.png"})])
             for s in range(3)]
    boltzmann = [("boltzmann seed 0", [("11_explicit_targets", {"kl_bound": 1})])]
    groups = {"recipe": recipe, "original": original, "five": five, "boltzmann": boltzmann}
    for name in only or groups:
        yield from groups[name]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["recipe", "original", "five", "boltzmann"])
    args = parser.parse_args()
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                  text=True).stdout.splitlines() if line.startswith("Model name")), platform.processor())
    print(f"CPU: {model}, {os.cpu_count()} logical cores; load average before: {os.getloadavg()}")
    print("| case | final loss | long-run KL | noise floor | training s |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        shutil.copytree(ROOT / "notebooks", folder / "notebooks")
        for label, runs in cases(args.only):
            found = {}
            for name, parameters in runs:
                found.update(numbers(run_notebook(folder, name, parameters)))
            cells = [f"{found[key]:.4f}" if key in found else "-" for key in ("final_loss", "long_run_kl", "noise_floor")]
            cells.append(f"{found['seconds']:.1f}" if "seconds" in found else "-")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
