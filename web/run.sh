#!/usr/bin/env bash
# Run the app: build the wasm module, then serve the page on http://127.0.0.1:8080/ (PORT=… to change).
set -euo pipefail
cd "$(dirname "$0")/.."
bash web/build.sh
exec node web/serve.mjs --port "${PORT:-8080}"
