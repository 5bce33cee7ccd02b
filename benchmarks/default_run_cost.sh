#!/usr/bin/env bash
# The cost of whole workflow runs, each from a fresh clone, one after the other:
#   benchmarks/default_run_cost.sh NAME=COMMIT[:CONFIG[:PYTHON_BIN_DIR]] ...
# e.g. (this wave's comparison, README "The workflow"):
#   benchmarks/default_run_cost.sh base=398739d::/work/venv-base/bin \
#       same=HEAD:/tmp/config_398739d.yaml default=HEAD
# CONFIG replaces the clone's config.yaml; PYTHON_BIN_DIR puts an environment with that commit
# installed first on PATH (old code registers other metric plugins). Each run is
# `python -m snakemake --cores all` with the clone's src/ on PYTHONPATH. The table gives its wall
# time, the CPU time of the whole Snakemake process tree (GNU time: user + sys of Snakemake and
# every job it waited for, exact) and the sum of cpu_time in results/benchmarks (sampled by
# Snakemake, see study_report.py). Run it on a quiet machine: nothing else may run beside it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${TMPDIR:-/tmp}/metalandscape-run-cost
mkdir -p "$work"
rows=()
for spec in "$@"; do
    name=${spec%%=*}
    IFS=: read -r commit config bindir <<< "${spec#*=}"
    commit=$(git -C "$here" rev-parse --short "$commit")
    clone=$work/$name
    rm -rf "$clone"
    git clone -q "$here" "$clone"
    git -C "$clone" checkout -q "$commit"
    [[ -n "$config" ]] && cp "$config" "$clone/config.yaml"
    echo "$name: $commit in $clone ($(date +%H:%M:%S))" >&2
    (
        cd "$clone"
        PATH=${bindir:+$bindir:}$PATH PYTHONPATH=$clone/src /usr/bin/time -f "%e %U %S" \
            -o time.txt python -m snakemake --cores all > snakemake.log 2>&1
    ) || { echo "$name failed: see $clone/snakemake.log" >&2; exit 1; }
    read -r wall user system < "$clone/time.txt"
    jobs=$(grep -c "^Finished job" "$clone/snakemake.log" || true)
    sampled=$(PYTHONPATH=$here/src python "$here/benchmarks/study_report.py" \
        --results "$clone/results" | awk -F'|' '/^\| all /{gsub(/ /, "", $4); print $4}')
    rows+=("$name|$commit|$jobs|$wall|$user|$system|$sampled")
done
printf '\n%-10s %-9s %5s %8s %9s %9s %21s\n' run commit jobs "wall s" "tree CPU" ratio \
    "benchmarks CPU s"
first=""
for row in "${rows[@]}"; do
    IFS='|' read -r name commit jobs wall user system sampled <<< "$row"
    cpu=$(python -c "print(round($user + $system, 1))")
    first=${first:-$cpu}
    ratio=$(python -c "print(f'{$cpu / $first:.0%}')")
    printf '%-10s %-9s %5s %8s %9s %9s %21s\n' "$name" "$commit" "$jobs" "$wall" "$cpu" \
        "$ratio" "$sampled"
done
echo "tree CPU: user + sys of the Snakemake process tree; ratio: against the first run;" \
    "benchmarks CPU: sum of cpu_time in results/benchmarks (sampled - at most). $(uptime)"
