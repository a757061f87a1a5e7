#!/usr/bin/env bash
# One GPU session: everything this project wants from a GPU, in one results folder, in
# under 8 minutes of device time (each step has its own time limit; the limits add up to
# 7 min 40 s).
#
#   bash benchmarks/gpu_session.sh [--dry-run] [--archive FILE] [RESULTS_DIR]
#
# Steps (a failing step does not stop the others; each one's output, exit code and time
# are recorded; the exit code is 1 if any step failed):
#   1. info        nvidia-smi, `python -m gpualign info`, versions, commit -> info.txt
#   2. gpu-tests   python -m pytest -m gpu tests/gpu (both backends compared on the device)
#                                                          -> gpu-tests.log, gpu-tests.xml
#   3. gpu-bench   benchmarks/gpu_bench.py --sizes 4k 8k 16k --full-size 16k: time per
#                  stage, bandwidth, whole 16k registration, issue 3's targets
#                                                          -> gpu-bench.log/.md/.jsonl
#   4. cpu-vs-gpu  benchmarks/gpu_compare.py: every benchmark field (benchmarks/fields.py,
#                  generated into $FIELDS_DIR when missing) on both backends; accuracy
#                  vs truth and the RMS difference of mappings and pixels per field
#                                                          -> cpu-vs-gpu.log/.md/.jsonl
#   summary.md: each step's command, exit code and time.
#
# RESULTS_DIR defaults to bench-out/gpu-session-<UTC time> in the repository (git-ignored).
# --archive FILE: also pack RESULTS_DIR into FILE (.tar.gz), e.g. to bring it back from a
# lent machine, which returns at most 8 files.
#
# --dry-run: the same steps at tiny sizes (gpu_bench at 256/384 px, the few8 field only)
# on the strict CPU stand-in for CuPy (tests/gpu/strict_cupy, through
# benchmarks/_standin.py), without a GPU, in well under a minute; the gpu-marked tests
# skip (no device). CI runs it (tests/packaging/test_gpu_session.py), so a broken script
# fails CI.
#
# Environment: PYTHON (default python3; gpualign and its dependencies importable: this
# checkout is put first on PYTHONPATH), FIELDS_DIR (default bench-out/fields in the
# repository), LIMIT_INFO / LIMIT_TESTS / LIMIT_BENCH / LIMIT_COMPARE (seconds per step).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry=0
archive=""
results=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --archive) archive="${2:?--archive needs a file}"; shift ;;
        --archive=*) archive="${1#--archive=}" ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_session: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "$results" ] || { echo "gpu_session: one RESULTS_DIR only" >&2; exit 2; }
           results="$1" ;;
    esac
    shift
done

python="${PYTHON:-python3}"
results="${results:-$repo/bench-out/gpu-session-$(date -u +%Y%m%dT%H%M%SZ)}"
fields_dir="${FIELDS_DIR:-$repo/bench-out/fields}"
mkdir -p "$results" || exit 2
results="$(cd "$results" && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's gpualign
export PYTHONUNBUFFERED=1
cd "$repo" || exit 2

if [ "$dry" = 1 ]; then
    mode="dry run (strict CPU stand-in for CuPy, tiny sizes)"
    bench=("$python" benchmarks/_standin.py benchmarks/gpu_bench.py)
    bench_args=(--sizes 256 384 --full-size 256 --repeat 1)
    compare=("$python" benchmarks/_standin.py benchmarks/gpu_compare.py)
    compare_args=(--only few8)
    tests=(tests/gpu/test_gpu_pipeline.py)
    limits=(60 120 120 120)
else
    mode="GPU session"
    bench=("$python" benchmarks/gpu_bench.py)
    bench_args=(--sizes 4k 8k 16k --full-size 16k)
    compare=("$python" benchmarks/gpu_compare.py)
    compare_args=()
    tests=(tests/gpu)
    limits=(20 100 220 120)
fi
limit_info="${LIMIT_INFO:-${limits[0]}}"
limit_tests="${LIMIT_TESTS:-${limits[1]}}"
limit_bench="${LIMIT_BENCH:-${limits[2]}}"
limit_compare="${LIMIT_COMPARE:-${limits[3]}}"

summary="$results/summary.md"
{
    echo "# gpualign GPU session: $mode"
    echo
    echo "Started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), repository $repo."
    echo
    echo "| step | exit | seconds | limit s | command |"
    echo "|---|---|---|---|---|"
} >"$summary"
failed=0

# run_step NAME LIMIT LOG COMMAND...: run with a time limit, output to LOG, record it.
run_step() {
    local name="$1" limit="$2" log="$3"
    shift 3
    echo "== $name (limit ${limit}s): $*"
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    case "$rc" in
        0) echo "   ok, ${secs}s" ;;
        124|137) echo "   TIMED OUT after ${secs}s (see $log)"; failed=1 ;;
        *) echo "   FAILED with exit $rc after ${secs}s (see $log)"; failed=1 ;;
    esac
    tail -n 3 "$log" | sed 's/^/   | /'
    echo "| $name | $rc | $secs | $limit | \`$*\` |" >>"$summary"
}

info() {
    echo "mode: $mode"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname) ($(uname -srm)), $(nproc 2>/dev/null || echo '?') cores"
    echo "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" \
         "$(git -C "$repo" status --short 2>/dev/null | wc -l | tr -d ' ') changed files"
    echo "python: $("$python" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
    echo
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo
    echo "--- versions"
    "$python" - <<'EOF'
import importlib.metadata as md
for name in ("gpualign", "numpy", "scipy", "astropy", "sep", "cupy-cuda12x", "cupy-cuda13x",
             "pytest"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} -")
EOF
    echo
    echo "--- python -m gpualign info"
    if [ "$dry" = 1 ]; then
        echo "(dry run: the stand-in is installed only inside the benchmark steps)"
    fi
    "$python" -m gpualign info
}

# The CPU warp's host library (kernels/host_warp.cpp): built by `pip install .`; build it
# here when this checkout runs without an install, with the wheel hook's flags (SciPy's
# values bit for bit), so the CPU side of the comparison runs the shipped sampler.
if [ ! -f "$repo/gpualign/libgpualign_host.so" ] && command -v "${CXX:-c++}" >/dev/null; then
    "${CXX:-c++}" -std=c++17 -O2 -ffp-contract=off -fPIC -shared \
        -o "$repo/gpualign/libgpualign_host.so" "$repo/kernels/host_warp.cpp" \
        || echo "gpu_session: could not build libgpualign_host.so (the CPU warp uses SciPy)"
fi

echo "gpu_session: $mode -> $results"
export mode repo python dry
export -f info
run_step info "$limit_info" "$results/info.txt" bash -c info
run_step gpu-tests "$limit_tests" "$results/gpu-tests.log" \
    "$python" -m pytest -m gpu -q -rs -p no:cacheprovider \
    --junitxml="$results/gpu-tests.xml" "${tests[@]}"
run_step gpu-bench "$limit_bench" "$results/gpu-bench.log" \
    "${bench[@]}" "${bench_args[@]}" \
    --jsonl "$results/gpu-bench.jsonl" --out "$results/gpu-bench.md"
run_step cpu-vs-gpu "$limit_compare" "$results/cpu-vs-gpu.log" \
    "${compare[@]}" --fields "$fields_dir" "${compare_args[@]}" \
    --jsonl "$results/cpu-vs-gpu.jsonl" --out "$results/cpu-vs-gpu.md"

{
    echo
    echo "Finished $(date -u +%Y-%m-%dT%H:%M:%SZ): $([ "$failed" = 0 ] && echo "every step ok" \
        || echo "SOME STEP FAILED")."
    for md in gpu-bench.md cpu-vs-gpu.md; do
        if [ -f "$results/$md" ]; then
            echo
            sed 's/^# /## /' "$results/$md"
        fi
    done
} >>"$summary"

if [ -n "$archive" ]; then
    mkdir -p "$(dirname "$archive")"
    tar -czf "$archive" -C "$(dirname "$results")" "$(basename "$results")" \
        && echo "gpu_session: archive $archive"
fi
echo "gpu_session: summary $summary"
exit "$failed"
