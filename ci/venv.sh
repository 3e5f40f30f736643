#!/usr/bin/env bash
# Prints the path of the Python venv for tests/peers, creating it first when
# needed. The venv lives under ~/.cache/smbdirect/venv-<hash of
# tests/peers/requirements.txt>, so a change of pins makes a new one and an
# unchanged file reuses the cached one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/tests/peers/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-16)
venv="${SMBDIRECT_CACHE:-$HOME/.cache/smbdirect}/venv-$hash"
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "${PYTHON:-python3}" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$req" >&2
    touch "$venv/.complete"
fi
echo "$venv"
