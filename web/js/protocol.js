// The worker protocol, shared by both sides: the message kinds, and the errors that cross
// postMessage as `{code, message}` and are rebuilt on the page as the same class, so callers
// test `err.code`, never the wording of a message.

/** Message kinds. Page → worker requests carry `{kind, id, payload}`; answers reuse the id. */
export const Kind = Object.freeze({
  LOAD: 'load',
  GENERATE: 'generate',
  SIZES: 'sizes',
  CHECK_IMAGE: 'check-image',
  CANCEL: 'cancel',
  /** Arms a test fault; answered only by a worker started with `?faults=1`. */
  FAULT: 'fault',
  PROGRESS: 'progress',
  PREVIEW: 'preview',
  RESULT: 'result',
  ERROR: 'error',
  /** The worker is unusable (GPU lost, wasm panic): the page starts a new one. No id. */
  FATAL: 'fatal',
});

/** The faults a `fault` request can arm (see worker.js). */
export const FAULTS = Object.freeze(['destroy-device', 'gpu-error', 'panic', 'webm-fails', 'refine-fails']);

/** Anything that went wrong, as a sentence; `code` says what kind of thing. */
export class WorkerError extends Error {
  static code = 'failed';

  get code() {
    return this.constructor.code;
  }
}

/** The user cancelled. */
export class Cancelled extends WorkerError {
  static code = 'cancelled';
}

/** A request the worker cannot take (unknown kind, wrong types, out of bounds). */
export class BadRequest extends WorkerError {
  static code = 'bad-request';
}

/** The GPU device was lost or reported an error: the worker must be replaced. */
export class GpuLost extends WorkerError {
  static code = 'gpu-lost';
}

/** The wasm module panicked: its instance is unusable, the worker must be replaced. */
export class Panic extends WorkerError {
  static code = 'panic';
}

/** The browser refused to store more of the model. */
export class StorageFull extends WorkerError {
  static code = 'storage';
}

/**
 * A model file could not be downloaded whole and right: the network failed after every retry,
 * the server refused (HTTP errors), or the bytes were cut short or are not those published.
 */
export class DownloadFailed extends WorkerError {
  static code = 'download';
}

/** The memory plan refuses the request on this GPU (or within the page's budget). */
export class TooLarge extends WorkerError {
  static code = 'too-large';
}

const CLASSES = new Map([WorkerError, Cancelled, BadRequest, GpuLost, Panic, StorageFull, DownloadFailed, TooLarge].map((c) => [c.code, c]));

/** Codes after which the worker is unusable and is restarted. */
export const FATAL_CODES = new Set([GpuLost.code, Panic.code]);

/**
 * An error as it crosses postMessage: a wasm trap (`RuntimeError: unreachable`, a Rust panic)
 * is a panic; anything else keeps its own code or is `failed`.
 */
export function errorPayload(err) {
  if (err instanceof WorkerError) return { code: err.code, message: err.message };
  if (err instanceof WebAssembly.RuntimeError) return { code: Panic.code, message: PANIC_SENTENCE };
  return { code: WorkerError.code, message: err instanceof Error ? err.message : String(err) };
}

/** The error a `{code, message}` payload stands for, as its class. */
export function errorFrom({ code, message } = {}) {
  const Class = CLASSES.get(code) ?? WorkerError;
  return new Class(typeof message === 'string' ? message : 'The worker failed without saying why.');
}

export const PANIC_SENTENCE = "The generator hit an internal error and was restarted; the model is reloading from this browser's cache. Try again.";
export const GPU_LOST_SENTENCE = "The GPU was reset; the model is reloading from this browser's cache. Try again.";
