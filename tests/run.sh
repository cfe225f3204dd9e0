#!/usr/bin/env bash
# The one test command: installs the servers the end-to-end tests start (when missing), then
# checks formatting and lints, builds the binaries the tests run, and runs every test.
#
#   ./tests/run.sh
#
# Works on a fresh Debian machine with a Rust toolchain; uses sudo for apt-get only when not
# root. Each step prints a "==>" line first, so a failure is easy to place.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '\n==> %s\n' "$*"
}

# Debian packages the end-to-end tests need (servers they start, and Chromium with a CJK font
# for the console; the console tests also need Node.js 20 with npm; python3 for
# deploy/mosquitto/check-acl.sh, which tests/tests/deploy_tls.rs runs; binutils (strip,
# readelf) for deploy/package.sh and systemd for `systemd-analyze verify`, which
# tests/tests/packages.rs runs), and postgresql, whose server the store's tests start in a
# temp dir (the package's own service is not used).
PACKAGES=(mosquitto mosquitto-clients victoria-metrics prometheus-alertmanager chromium chromium-driver
    fonts-wqy-microhei python3 binutils systemd postgresql)

missing=()
for package in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    step "installing missing packages: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        echo "need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
    step "packages present: ${PACKAGES[*]}"
fi

for tool in /usr/sbin/mosquitto /usr/bin/victoria-metrics /usr/bin/prometheus-alertmanager; do
    if [[ ! -x $tool ]]; then
        echo "expected $tool after installing packages; it is missing" >&2
        exit 1
    fi
done

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    step "installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --bins"
cargo build --workspace --bins

step "cargo test --workspace"
cargo test --workspace

step "console in headless Chromium: npm ci and node --test tests/console/"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "the console tests need Node.js 20 (node and npm on PATH)" >&2
    exit 1
fi
npm ci --prefix tests/console --no-audit --no-fund
node --test tests/console/

step "all checks passed"
