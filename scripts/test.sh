#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs ruff, mypy, import-linter and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's dcmtk (storescu, echoscu, storescp) and dicom3tools (dciodvfy); `command -v storescu`
# is not enough: pynetdicom installs an app of the same name. chromium and chromium-driver run
# the web console's browser tests (tests/web/test_browser.py, headless). postgresql: the server
# binaries the shared-database tests start their own cluster with (tests/postgres.py; the
# Debian service itself is not used).
if ! dpkg -s dcmtk dicom3tools chromium chromium-driver postgresql >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk dicom3tools chromium \
        chromium-driver postgresql >/dev/null
fi
python3 -m pip install -q -e '.[dev]'
echo "== ruff" && python3 -m ruff check .
echo "== mypy" && python3 -m mypy
echo "== import-linter" && lint-imports --no-cache
echo "== pytest" && SRO_REQUIRE_POSTGRES=1 python3 -m pytest -q -p no:cacheprovider "$@"
