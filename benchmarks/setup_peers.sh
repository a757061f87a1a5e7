#!/usr/bin/env bash
# Create the peers' virtual environment (spalipy 3.5.5, astroalign 2.6.2) outside gpualign's.
# Usage: bash benchmarks/setup_peers.sh [VENV_PATH]   (default: .venv-peers in the repo root)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv-peers}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet spalipy==3.5.5 astroalign==2.6.2 numpy scipy astropy sep
"$venv/bin/python" -c "import spalipy, astroalign, sep; print('peers venv ready:', '$venv')"
