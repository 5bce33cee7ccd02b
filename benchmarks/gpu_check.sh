#!/usr/bin/env bash
# One prepared GPU check (≤ 8 min on one H100/H200): the cuda-marked tests, bench_maml.py,
# bench_hessian_backends.py and bench_throughput.py (5 seeds before issue 24, alone and in lockstep) on the card
# with short settings, and the tiny preset with
# `device: cuda` and `--resources gpu=1` against the same preset on CPU (aggregates compared to
# float tolerance). Prints one table headed by the card's name (nvidia-smi).
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry      # no GPU: print the plan, run the CPU-side parts
#   bash benchmarks/gpu_check.sh --compare A.nc B.nc   # the aggregate comparison alone
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
RTOL=${GPU_CHECK_RTOL:-1e-3}  # float32 reductions differ in order between CPU and cuDNN
ATOL=${GPU_CHECK_ATOL:-1e-5}

compare() {  # compare A.nc B.nc: print max differences per variable; exit 1 beyond tolerance
  python - "$1" "$2" "$RTOL" "$ATOL" <<'PY'
import sys
import numpy as np
import xarray as xr

first, second, rtol, atol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
a = xr.open_dataset(first, engine="h5netcdf").load()
b = xr.open_dataset(second, engine="h5netcdf").load()
bad = sorted(set(a.data_vars) ^ set(b.data_vars))
if bad:
    print(f"variables only on one side: {bad}")
worst = 0.0
for name in sorted(set(a.data_vars) & set(b.data_vars)):
    x, y = xr.align(a[name], b[name], join="outer")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    same_nan = np.array_equal(np.isnan(x), np.isnan(y))
    ok = same_nan and np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
    finite = ~np.isnan(x) & ~np.isnan(y)
    diff = np.abs(x - y)[finite]
    scale = np.maximum(np.abs(y[finite]), atol)
    rel = float((diff / scale).max()) if diff.size else 0.0
    worst = max(worst, rel)
    if not ok:
        bad.append(name)
    print(f"  {name:<40} max rel diff {rel:9.2e} {'ok' if ok else 'DIFFERS'}")
print(f"compare {first} {second}: worst {worst:.2e}, {'OK' if not bad else 'DIFFERS: ' + ', '.join(bad)}")
sys.exit(1 if bad else 0)
PY
}

if [[ "${1:-}" == "--compare" ]]; then
  compare "$2" "$3"
  exit $?
fi
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
DEVICE=cuda
CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
if ((DRY)); then
  DEVICE=cpu
  CARD="none (--dry: CPU-side parts only)"
elif [[ -z "$CARD" ]] || ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device visible to nvidia-smi and PyTorch; use --dry for the CPU parts" >&2
  exit 2
fi

declare -a NAMES STATUS SECONDS_ DETAIL
step() {  # step NAME LIMIT_S COMMAND... : run (or with --dry print) one step, record its result
  local name=$1 limit=$2
  shift 2
  local log="$WORK/$name.log" started=$SECONDS rc
  if ((DRY)) && [[ "$name" != cuda-tests ]]; then
    echo "[dry] $name: $*" | tee "$log"
    rc=0
  elif declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
    timeout "$limit" bash -c "$*" >"$log" 2>&1
    rc=$?
  else
    timeout "$limit" "$@" >"$log" 2>&1
    rc=$?
  fi
  NAMES+=("$name")
  STATUS+=("$([[ $rc == 0 ]] && echo ok || echo "FAIL($rc)")")
  SECONDS_+=("$((SECONDS - started))")
  DETAIL+=("$(grep -E 'passed|skipped|goal|MET|compare .*worst|speed-up|×|error' "$log" | tail -1 | cut -c1-90)")
}

# The tiny preset, in a copy of the workflow (tracked files only), on DEVICE and on CPU at once.
tiny() {  # tiny DIR DEVICE [snakemake args...]
  local dir=$1 device=$2
  shift 2
  mkdir -p "$dir" && git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$dir"
  (cd "$dir" && snakemake --cores 4 --configfile workflow/presets/tiny.yaml \
    --config device="$device" "$@" results/aggregate/sinusoid.nc results/aggregate/fontglot.nc)
}
tiny_pair() {
  tiny "$WORK/tiny-cpu" cpu >"$WORK/tiny-cpu.log" 2>&1 &
  local cpu_pid=$!
  tiny "$WORK/tiny-cuda" "$DEVICE" --resources gpu=1 || return 1
  wait "$cpu_pid" || return 1
  local rc=0
  for family in sinusoid fontglot; do
    compare "$WORK/tiny-cuda/results/aggregate/$family.nc" \
      "$WORK/tiny-cpu/results/aggregate/$family.nc" || rc=1
  done
  return $rc
}

export -f compare tiny tiny_pair
export WORK DEVICE RTOL ATOL

step cuda-tests 120 python -m pytest -q -m cuda tests/test_devices.py
step bench-maml 90 python benchmarks/bench_maml.py --quick --device "$DEVICE"
step bench-hessian 90 python benchmarks/bench_hessian_backends.py --quick --tasks 12 \
  --repeats 1 --device "$DEVICE" --work-dir "$WORK/bench-hessian"
step bench-hessian-warm 90 python benchmarks/bench_hessian_backends.py --walk-epochs 3 \
  --tasks 12 --device "$DEVICE" --work-dir "$WORK/bench-hessian"
step bench-throughput 150 python benchmarks/bench_throughput.py --device "$DEVICE" --seeds 5 \
  --repeats 1 --iterations 10 --min-seconds 1 \
  --settings "fontglot 1-shot T5 B4 16f" "fontglot 1-shot T1 B32 64f"
step tiny-preset 180 tiny_pair

echo
echo "gpu_check on: $CARD ($(python -c 'import torch; print("torch", torch.__version__)'))"
printf '%-18s %-9s %6s  %s\n' step status wall_s detail
for i in "${!NAMES[@]}"; do
  printf '%-18s %-9s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECONDS_[$i]}" "${DETAIL[$i]}"
done
echo "logs: $WORK"
for s in "${STATUS[@]}"; do [[ $s == ok ]] || exit 1; done
