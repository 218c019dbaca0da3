#!/usr/bin/env bash
# The real-size run in Chromium (opt-in, not in CI; hours on a 2-core box without a GPU): writes
# the full-size I2VGen-XL with seeded random weights (4.98 GB, f16, real configs and tokenizer)
# once, generates 2 frames at 64×64 with 1 step natively (`i2vgen generate`, wgpu, packed-f16:
# what the page uses on a GPU without shader-f16, as SwiftShader is), then loads the same model
# hub-style into the page in headless Chromium cold and warm and checks the frames
# (tests/real_size.test.mjs), printing what it measured.
# Needs ~5 GB of disk for the model, ~5 GB for Chromium's cache, and ~12 GB of RAM.
set -euo pipefail
cd "$(dirname "$0")/.."

model=tests/out/real-i2vgen
native=tests/out/real-size-native.safetensors
request='{"prompt":"a cat surfing","negativePrompt":"","width":64,"height":64,"frames":2,"fps":16,"steps":1,"guidance":9,"seed":0}'

cargo build --release --quiet --bin i2vgen --bin weights-tools
if [ ! -f "$model/unet/diffusion_pytorch_model.safetensors" ]; then
  echo "==> writing the random full-size model to $model"
  rm -rf "$model"
  target/release/weights-tools random --config real --dtype f16 --to "$model"
fi
echo "==> native: i2vgen generate on the real-size model (wgpu, packed-f16)"
start=$(date +%s)
target/release/i2vgen generate --model "$model" --image tests/fixtures/golden/image.png \
  --prompt "a cat surfing" --negative-prompt "" --frames 2 --height 64 --width 64 --fps 16 --steps 1 --guidance 9 \
  --seed 0 --backend wgpu --dtype packed-f16 --output "$native"
echo "native run: $(( $(date +%s) - start )) s"

bash web/build.sh
if [ ! -d tests/node_modules/playwright-core ]; then (cd tests && npm ci --no-audit --no-fund --loglevel=error); fi
# The page's hub mirror serves tests/fixtures/<name>/ (a link inside the repository is allowed).
link=tests/fixtures/real-i2vgen
ln -sfn ../out/real-i2vgen "$link"
trap 'rm -f "$link"' EXIT
echo "==> Chromium: cold and warm load and one generation (SwiftShader)"
start=$(date +%s)
REAL_SIZE_NATIVE="$native" REAL_SIZE_REQUEST="$request" node --test tests/real_size.test.mjs
echo "Chromium run: $(( $(date +%s) - start )) s"
