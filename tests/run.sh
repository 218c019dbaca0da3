#!/usr/bin/env bash
# Run every test: formatting and lints (native and wasm32), the Rust workspace (CPU backend and
# native wgpu on Mesa llvmpipe) and the browser end-to-end tests (headless Chromium, WebGPU on
# SwiftShader). Installs what is missing, once.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium mesa-vulkan-drivers)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (apt)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo test (CPU and wgpu backends)"
cargo test --workspace

echo "==> cargo clippy (native)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

bash web/build.sh

echo "==> cargo clippy (wasm32)"
cargo clippy --quiet --target wasm32-unknown-unknown -p i2vgen -p i2vgen-web --no-default-features -- -D warnings

if [ ! -d tests/node_modules/playwright-core ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
  echo "==> installing npm packages for tests/"
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "==> browser end-to-end tests (headless Chromium, WebGPU on SwiftShader)"
node --test --test-concurrency=1 tests/e2e/
