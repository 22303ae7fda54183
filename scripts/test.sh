#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: installs the system tools the suites drive
# (curl, openssl, h2load, SoftHSM2, pkcs11-tool, HAProxy), then checks formatting and lints and
# runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in curl:curl openssl:openssl h2load:nghttp2-client softhsm2-util:softhsm2 \
            pkcs11-tool:opensc haproxy:haproxy wrk:wrk; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
