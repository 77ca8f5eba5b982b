#!/usr/bin/env bash
# GPU tier of the fused kernels in one go, for a machine with a CUDA GPU:
#   1. the GPU tests of tests/test_ops.py (bf16, autocast, torch.compile(fullgraph=True) with Inductor,
#      CUDA-graph capture, large shapes) with compiled kernels (TRITON_INTERPRET=0), plus the CUDA-target
#      dry run that CI also runs;
#   2. the full kernel benchmark (fp32 inputs; DTYPES=float32,bfloat16 adds bf16), which writes benchmarks/results/kernels_cuda.csv
#      and the bench_kernels:cuda section of benchmarks/RESULTS.md, ending with the issue's GPU targets
#      (3x eager, >= torch.compile, 60 % of the card's bandwidth on the largest map, InfoNCE 2x) as met / not met.
# Usage: benchmarks/gpu_check.sh [extra bench_kernels.py arguments, e.g. --no-compiled or --only infonce]
# Time: an estimate, the script has not run on a GPU yet: ~2 min for the tests, ~10 min for the benchmark on an
# H100 (most of it torch.compile of the reference); on a tight device budget pass --quick (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export TRITON_INTERPRET=0 PYTHONHASHSEED=0

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check.sh: no CUDA device visible to torch " + torch.__version__)
import triton
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, {torch.cuda.get_device_name()}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

mkdir -p benchmarks/results
# GPU tests: any skip here means the tier did not really run, so skips are reported (-rs) and counted as failure.
"$PY" -m pytest -q -rs -m "gpu or slow" tests/test_ops.py -p no:cacheprovider --junitxml=benchmarks/results/gpu_tests.xml
if grep -q '<skipped' benchmarks/results/gpu_tests.xml; then
    echo "gpu_check.sh: some GPU tests were skipped (see above)" >&2
    exit 1
fi

# DTYPES=float32,bfloat16 for both (each dtype adds a torch.compile of the reference per case: minutes)
"$PY" benchmarks/bench_kernels.py --device cuda --dtype "${DTYPES:-float32}" "$@"
echo "gpu_check.sh: done; results in benchmarks/results/kernels_cuda.csv and benchmarks/RESULTS.md"
