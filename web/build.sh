#!/usr/bin/env bash
# Build the wasm module the page loads: web/pkg/i2vgen_web{.js,_bg.wasm}.
# Installs what it needs (wasm32 target, wasm-bindgen-cli at the locked version, npm binaryen for
# wasm-opt) only when missing, and redoes wasm-bindgen + wasm-opt only when the wasm changed, so a
# second run is quick and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "==> adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "==> installing wasm-bindgen-cli $want (about 6 minutes, once)"
  # Not --locked: the registry mirror lacks one of its locked dependencies.
  cargo install --quiet --force wasm-bindgen-cli --version "$want"
fi

if [ ! -x web/node_modules/.bin/wasm-opt ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  echo "==> installing npm packages for web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi

stamp=web/pkg/.built-from
if [ -f "$stamp" ]; then
  cargo build --quiet --profile wasm --target wasm32-unknown-unknown -p i2vgen-web
else
  echo "==> building the wasm module (size-optimised release profile 'wasm', about 11 minutes cold)"
  cargo build --profile wasm --target wasm32-unknown-unknown -p i2vgen-web
fi
input="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm/i2vgen_web.wasm"
wasm=web/pkg/i2vgen_web_bg.wasm

# Skip wasm-bindgen and the 3-minute wasm-opt when cargo's output is the one already processed.
want_stamp="$(sha256sum "$input" | cut -d' ' -f1) wasm-opt=${I2VGEN_WASM_OPT:-1}"
if [ -f "$wasm" ] && [ -f web/pkg/i2vgen_web.js ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
  exit 0
fi
rm -f "$stamp"

echo "==> wasm-bindgen"
wasm-bindgen --target web --no-typescript --out-dir web/pkg "$input"
raw=$(stat -c %s "$wasm")
if [ "${I2VGEN_WASM_OPT:-1}" = 0 ]; then
  echo "==> $wasm: $((raw / 1024)) KiB (wasm-opt skipped: I2VGEN_WASM_OPT=0)"
else
  echo "==> wasm-opt -Oz (about 3 minutes)"
  web/node_modules/.bin/wasm-opt -Oz \
    --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
  echo "==> $wasm: $((raw / 1024)) KiB after wasm-bindgen, $(($(stat -c %s "$wasm") / 1024)) KiB after wasm-opt -Oz, $(($(gzip -9c "$wasm" | wc -c) / 1024)) KiB gzipped"
fi
echo "$want_stamp" > "$stamp"
