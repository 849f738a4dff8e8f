#!/usr/bin/env bash
# GPU checks and GPU benchmarks in one go, for a machine with a CUDA device (CI has none).
#
#   bash benchmarks/device_check.sh [OUTDIR]
#
# 1. the CUDA tests (tests/test_cuda.py, tests/test_forward_torch.py);
# 2. benchmarks/sgd_speed.py on the GPU (100 starts x 3000 iterations, float32/bfloat16,
#    eager/compiled; the per-start reference loop on the same GPU; the nonlinear case,
#    whose shortest-path operator gets all CPU cores: --n-jobs -1);
# 3. benchmarks/train_prior.py training throughput on the GPU (committed prior evaluated);
# 4. the whole test suite with the GPU present (device="auto" picks it), if time is left;
# 5. sgd_speed with 1000 starts, if time is left.
# 6. the nonlinear case alone (random and source-gather batching), if time is left.
# STEPS="pytest_cuda pytest_all" (say) runs only those steps; BUDGET (s, default 420)
# bounds the whole run. Logs and results land in OUTDIR (default $OUT, else /tmp/device_check) and
# benchmarks/results/<study>/*cuda*. Needs ../shared/data. On the workplace's lent GPU machine
# ../shared does not travel: copy it to .shared_data (ignored by .gitignore, never
# committed), name it in the run's carry, and delete the copy afterwards.
set -u
OUTDIR=${1:-${OUT:-/tmp/device_check}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
t0=$(date +%s)
left() { echo $(( ${BUDGET:-420} - ($(date +%s) - t0) )); }
step() {  # step NAME TIMEOUT CMD...: run with a timeout, log to OUTDIR/NAME.log
  local name=$1 limit=$2; shift 2
  case " ${STEPS:-$name} " in *" $name "*) ;; *) return ;; esac
  if [ "$(left)" -lt 20 ]; then echo "== $name: skipped (no time left)"; return; fi
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  local s=$(date +%s)
  timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  echo "== $name: rc=$? in $(( $(date +%s) - s )) s (limit $limit s)"
  tail -n 4 "$OUTDIR/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, sklearn, scipy, numpy; print(sys.version.split()[0], torch.__version__, torch.version.cuda, sklearn.__version__, scipy.__version__, numpy.__version__, torch.cuda.get_device_name(0))"
if [ ! -d ../shared/data ] && [ -d .shared_data ]; then
  mkdir -p ../shared && cp -r .shared_data ../shared/data
fi
# numba (a dependency) may be missing on a GPU machine that cannot reach a package index:
# the nonlinear runs then time scipy's Dijkstra only (ShortestPath's "auto" falls back)
NLB=$($PY -c "import numba" 2>/dev/null && echo numba || echo scipy)
step pytest_cuda 200 $PY -m pytest -q -p no:cacheprovider -rfEs tests/test_cuda.py tests/test_forward_torch.py
step sgd_speed_cuda 220 $PY benchmarks/sgd_speed.py --device cuda --n-jobs -1 --nl-batching random --nl-backends $NLB --name sgd_speed_cuda ${SGD_EXTRA:-}
step train_prior_cuda 120 $PY benchmarks/train_prior.py --evaluate-only --throughput-device cuda \
  --throughput-batches 20 --throughput-repeats 2 --compile --density none \
  --out benchmarks/priors/reference_prior.skv --name train_prior_cuda
step pytest_all 240 $PY -m pytest -q -p no:cacheprovider --tb=short -rfE -n 16 \
  --ignore=tests/test_dask.py
step sgd_speed_cuda_1000 90 $PY benchmarks/sgd_speed.py --device cuda --starts 1000 \
  --precisions bfloat16 --compile eager --ref-iterations 100 --nl-iterations 0 \
  --name sgd_speed_cuda_1000
step sgd_speed_cuda_nonlinear 120 $PY benchmarks/sgd_speed.py --device cuda --n-jobs -1 --skip-linear \
  --nl-batching source random --nl-backends $NLB --name sgd_speed_cuda_nonlinear
tar czf "$OUTDIR/results.tgz" benchmarks/results/*/*cuda* 2>/dev/null
echo "== total $(( $(date +%s) - t0 )) s"
