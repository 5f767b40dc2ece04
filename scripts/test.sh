#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for tool in storescu echoscu dciodvfy; do command -v "$tool" >/dev/null 2>&1 || missing=1; done
    if [ -n "$missing" ]; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk dicom3tools >/dev/null
    fi
fi
python3 -m pip install -q -e '.[dev]'
echo "== ruff" && python3 -m ruff check .
echo "== mypy" && python3 -m mypy
echo "== pytest" && python3 -m pytest -q -p no:cacheprovider "$@"
