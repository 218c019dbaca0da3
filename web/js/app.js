// The page: checks WebGPU, shows the adapter, and runs the wasm device check on it.
import init, { deviceCheck } from '../pkg/i2vgen_web.js';

const $ = (id) => document.getElementById(id);

const WEBGPU_HELP =
  'Use Chrome or Edge 113 or newer on Windows, macOS or ChromeOS (on Linux start Chrome with ' +
  '--enable-unsafe-webgpu and --enable-features=Vulkan), Safari 26, or Firefox 141 on Windows ' +
  '(elsewhere set dom.webgpu.enabled in about:config).';

function setState(state, message) {
  document.body.dataset.state = state;
  $('message').textContent = message;
}

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

function showAdapter(adapter) {
  const info = adapter.info ?? {};
  $('gpu-vendor').textContent = info.vendor || '(not reported)';
  $('gpu-architecture').textContent = info.architecture || '(not reported)';
  $('gpu-description').textContent = info.description || '(not reported)';
  $('gpu-f16').textContent = adapter.features.has('shader-f16') ? 'yes' : 'no (f32 path)';
  $('gpu-max-buffer').textContent = mib(adapter.limits.maxBufferSize);
  $('gpu-max-binding').textContent = mib(adapter.limits.maxStorageBufferBindingSize);
  $('gpu').hidden = false;
}

async function main() {
  if (!('gpu' in navigator)) {
    setState('no-webgpu', `WebGPU is not available in this browser, so the model cannot run here. ${WEBGPU_HELP}`);
    return;
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    setState('no-webgpu', `This browser has WebGPU but found no usable GPU adapter (it may be blocklisted or disabled). ${WEBGPU_HELP}`);
    return;
  }
  showAdapter(adapter);

  setState('loading', 'Loading the WebAssembly module…');
  await init();
  setState('loading', 'Running the device check on WebGPU…');
  const started = performance.now();
  const value = await deviceCheck();
  const ms = performance.now() - started;
  $('check-value').textContent = value.toExponential(7);
  $('check-time').textContent = `(${ms.toFixed(0)} ms including shader compilation)`;
  $('check').hidden = false;
  setState('ready', 'WebGPU works: burn ran the device check on your GPU.');
}

main().catch((err) => {
  console.error(err);
  setState('error', `Something went wrong: ${err?.message ?? err}. Reload the page to try again; if it keeps failing, your GPU driver may not support WebGPU.`);
});
