#!/usr/bin/env bash
# The GPU check of the triton backend, in one run of under 10 minutes on a machine with a CUDA GPU:
# the CUDA tests (compiled kernels against Norse's loop on the same GPU), then the GPU benchmark
# (benchmarks/benchmark_gpu.py: the issue's table, the recipe, the long-run evaluation, the goals).
#
# It uses the machine's python3 and its CUDA torch and triton (torch 2.11 with triton 3.6 was seen on
# the lent H200s; any torch >= 2.4 with a triton >= 3.0 should do). What that python lacks of the
# package's needs, Norse and its two small dependencies, it installs from wheels in .whl/ (no network
# is needed there). Prepare them once, on a machine with the package registry, in the repository
# root that travels to the GPU machine:
#
#     bash benchmarks/gpu_check.sh --prepare        # pip wheel norse nir nirtorch into .whl/ (1.6 MB),
#                                                   # and .whl/ into .git/info/exclude
#
# Then run it there, with .whl carried along, e.g. with this workplace's device tool:
#
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Logs go to $OUT if it is set (the device tool brings that folder back), else to results/gpu_check/:
# env.txt (GPU, driver, versions), tests.log, benchmark.log. The exit status is that of the tests,
# or of the benchmark if the tests passed. Budget: tests about 2-4 minutes (each kernel variant
# compiles once, a few seconds each), benchmark about 4-5 minutes; each step has its own timeout so
# that the whole stays under 10 minutes and the logs come back even if one step runs long.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    python="${PYTHON:-.venv/bin/python}"
    "$python" -m pip wheel --quiet --no-deps -w .whl norse==1.1.0 nir==1.0.8 nirtorch==2.6
    exclude="$(git rev-parse --git-path info/exclude)"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    ls -l .whl
    exit 0
fi

out="${OUT:-results/gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=python3

if ! "$python" -c "import norse" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "norse is not installed and .whl/ holds no wheels: run 'bash benchmarks/gpu_check.sh --prepare' first" \
            | tee "$out/tests.log"
        exit 2
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "$python" - <<'EOF'
import platform, torch, triton, norse, numpy
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {triton.__version__}, numpy {numpy.__version__}, cuda available: {torch.cuda.is_available()}")
try:
    import numba
    print(f"numba {numba.__version__}")
except Exception as error:
    print(f"numba unavailable: {error}")
EOF
    lscpu | grep -E "^Model name|^CPU\(s\)"
} 2>&1 | tee "$out/env.txt"

# -W default: the warnings the tests raise (rounding flips at threshold, each shown) are listed
timeout 270 "$python" -m pytest tests/test_engine_triton.py -v -rs -W default -p no:cacheprovider 2>&1 \
    | tee "$out/tests.log"
tests=$?

timeout 300 "$python" benchmarks/benchmark_gpu.py 2>&1 | tee "$out/benchmark.log"
benchmark=$?

echo "gpu_check: tests exit $tests, benchmark exit $benchmark (124: stopped by its timeout); logs in $out"
if [[ $tests -ne 0 ]]; then exit "$tests"; fi
exit "$benchmark"
