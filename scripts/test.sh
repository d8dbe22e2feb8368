#!/usr/bin/env bash
# Runs every test of orderflow: unit tests and the black-box suites.
# Starts (and stops) whatever services the suites need; the embedded profile needs none.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

cargo nextest run --all-targets --no-fail-fast
