#!/usr/bin/env bash
# Whole benchmark: peers venv, fields, gpualign, peers, comparison table.
# Usage: bash benchmarks/run_all.sh [DATA_DIR]
#   DATA_DIR    generated FITS + scratch (default: bench-out/ in the repo, git-ignored)
# Environment:
#   PYTHON      interpreter with gpualign installed (default: python3)
#   PEERS_VENV  peers' venv (default: .venv-peers in the repo; created if missing)
#   FIELDS      space-separated subset of field names (default: all; see fields.py --list)
#   SKIP_PEERS=1  reuse benchmarks/results/peers.jsonl instead of re-running the peers
#                 (spalipy, astroalign and, when installed, SExtractor + SCAMP + SWarp)
#   SKIP_GPUALIGN=1  reuse benchmarks/results/gpualign.jsonl
#   RESULTS     folder of the JSON lines and comparison.md (default: benchmarks/results;
#               set it for partial runs so the recorded results are not overwritten)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$repo/bench-out}"
python="${PYTHON:-python3}"
peers="${PEERS_VENV:-$repo/.venv-peers}"
results="${RESULTS:-$repo/benchmarks/results}"
only=()
if [ -n "${FIELDS:-}" ]; then only=(--only $FIELDS); fi
mkdir -p "$data" "$results"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # benchmark this checkout

echo "== fields -> $data/fields"
"$python" "$repo/benchmarks/fields.py" "$data/fields" "${only[@]}"

if [ "${SKIP_GPUALIGN:-0}" != 1 ]; then
    echo "== gpualign"
    "$python" "$repo/benchmarks/run_gpualign.py" --fields "$data/fields" \
        --out "$results/gpualign.jsonl" "${only[@]}"
fi

if [ "${SKIP_PEERS:-0}" != 1 ]; then
    if [ ! -x "$peers/bin/python" ]; then
        echo "== peers venv -> $peers"
        bash "$repo/benchmarks/setup_peers.sh" "$peers"
    fi
    echo "== peers (spalipy, astroalign)"
    "$peers/bin/python" "$repo/benchmarks/run_peers.py" --fields "$data/fields" \
        --out "$results/peers.jsonl" "${only[@]}"
    if command -v source-extractor >/dev/null && command -v scamp >/dev/null \
            && { command -v SWarp >/dev/null || command -v swarp >/dev/null; }; then
        echo "== SExtractor + SCAMP + SWarp"
        "$peers/bin/python" "$repo/benchmarks/run_scamp.py" --fields "$data/fields" \
            --out "$results/peers.jsonl" --append "${only[@]}"
    else
        echo "== (skipping SCAMP + SWarp: apt-get install source-extractor scamp swarp)"
    fi
fi

echo "== comparison"
"$python" "$repo/benchmarks/compare.py" "$results/gpualign.jsonl" "$results/peers.jsonl" \
    --out "$results/comparison.md"
