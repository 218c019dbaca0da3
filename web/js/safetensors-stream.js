// Reads a safetensors file as its bytes arrive: the header first, then each tensor is handed to
// `onTensor(name, dtype, shape, bytes)` as soon as its bytes are complete, so no more than one
// tensor is ever held in memory. The header is untrusted: every entry is checked (dtype, shape,
// offsets that agree with both, no overlap, nothing past the file's end) before any byte is
// placed, so a bad file is a sentence naming the file and tensor, never a RangeError or a
// tensor silently read from the wrong bytes.

/** Bytes per element of each safetensors dtype (which ones the model takes is the loader's call). */
const DTYPE_BYTES = new Map([
  ['BOOL', 1], ['U8', 1], ['I8', 1], ['F8_E5M2', 1], ['F8_E4M3', 1],
  ['I16', 2], ['U16', 2], ['F16', 2], ['BF16', 2],
  ['I32', 4], ['U32', 4], ['F32', 4],
  ['I64', 8], ['U64', 8], ['F64', 8],
]);
/** The largest tensor one ArrayBuffer may hold here (and wasm32 could take): 2 GiB. */
const MAX_TENSOR_BYTES = 2 ** 31;
const MAX_HEADER_BYTES = 100 * 2 ** 20;

export class SafetensorsStream {
  /** `size`: the file's length in bytes where known (Content-Length, the cached size), else null. */
  constructor(onTensor, what = 'the weights file', size = null) {
    this.onTensor = onTensor;
    this.what = what;
    this.size = size;
    this.head = new Uint8Array(0); // bytes of the 8-byte length + JSON header, until parsed
    this.tensors = null; // [{name, dtype, shape, begin, end}] by begin
    this.next = 0; // index of the tensor being filled
    this.offset = 0; // bytes of the data section consumed
    this.buffer = null; // the current tensor's bytes
    this.filled = 0;
  }

  push(chunk) {
    if (this.tensors === null) {
      chunk = this.readHeader(chunk);
      if (chunk === null) return;
    }
    let at = 0;
    // Until the bytes run out; a tensor of no bytes is handed over as soon as its offset is reached.
    while (this.next < this.tensors.length) {
      const t = this.tensors[this.next];
      if (this.offset < t.begin) { // a gap before the tensor: skip it
        if (at === chunk.length) break;
        const skip = Math.min(t.begin - this.offset, chunk.length - at);
        at += skip;
        this.offset += skip;
        continue;
      }
      if (this.buffer === null) {
        this.buffer = new Uint8Array(t.end - t.begin);
        this.filled = 0;
      }
      const take = Math.min(this.buffer.length - this.filled, chunk.length - at);
      this.buffer.set(chunk.subarray(at, at + take), this.filled);
      this.filled += take;
      at += take;
      this.offset += take;
      if (this.filled < this.buffer.length) break;
      const bytes = this.buffer;
      this.buffer = null;
      this.next += 1;
      this.onTensor(t.name, t.dtype, t.shape, bytes);
    }
  }

  /** Call after the last byte: throws if the file ended before its last tensor. */
  finish() {
    if (this.tensors === null) throw this.error('ended before its header did; it is truncated');
    if (this.next < this.tensors.length) throw this.error(`ended before its tensor "${this.tensors[this.next].name.slice(0, 200)}" did; it is truncated`);
  }

  readHeader(chunk) {
    const joined = new Uint8Array(this.head.length + chunk.length);
    joined.set(this.head);
    joined.set(chunk, this.head.length);
    if (joined.length < 8) { this.head = joined; return null; }
    const view = new DataView(joined.buffer, joined.byteOffset, 8);
    const length = Number(view.getBigUint64(0, true));
    if (length > MAX_HEADER_BYTES) throw this.error(`is not a safetensors file (its header claims ${length} bytes)`);
    if (joined.length < 8 + length) { this.head = joined; return null; }
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(joined.subarray(8, 8 + length)));
    } catch {
      throw this.error('is not a safetensors file (its header is not JSON)');
    }
    if (!isObject(header)) throw this.error('is not a safetensors file (its header is not a JSON object)');
    this.tensors = Object.entries(header)
      .filter(([name]) => name !== '__metadata__')
      .map(([name, entry]) => this.entry(name, entry))
      .sort((a, b) => a.begin - b.begin);
    let end = 0;
    for (const t of this.tensors) {
      if (t.begin < end) throw this.error(`has tensor "${t.name}" overlapping the tensor before it (it starts at byte ${t.begin} of the data, before byte ${end})`);
      end = t.end;
    }
    if (this.size !== null && 8 + length + end > this.size) {
      throw this.error(`has tensors up to byte ${8 + length + end} but is ${this.size} bytes long`);
    }
    this.head = null;
    return joined.subarray(8 + length);
  }

  /** One header entry, checked: `{name, dtype, shape, begin, end}`. */
  entry(name, entry) {
    const bad = (what) => this.error(`has a bad header entry for tensor "${name.slice(0, 200)}": ${what}`);
    if (!isObject(entry)) throw bad('it is not an object');
    const { dtype, shape, data_offsets: offsets } = entry;
    const size = DTYPE_BYTES.get(dtype);
    if (size === undefined) throw bad(`its dtype ${JSON.stringify(dtype)?.slice(0, 40)} is not a safetensors dtype`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad('its shape is not a list of non-negative integers');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad('its data_offsets are not two non-negative integers');
    }
    const [begin, end] = offsets;
    if (begin > end) throw bad(`its data_offsets begin at ${begin}, after their end ${end}`);
    // In BigInt: the product of safe integers need not be one.
    const bytes = shape.reduce((n, d) => n * BigInt(d), BigInt(size));
    if (bytes !== BigInt(end - begin)) throw bad(`its shape [${shape.join(', ')}] of ${dtype} needs ${bytes} bytes but its data_offsets span ${end - begin}`);
    if (bytes > MAX_TENSOR_BYTES) throw bad(`it is ${bytes} bytes, more than the ${MAX_TENSOR_BYTES} one tensor may be`);
    return { name, dtype, shape, begin, end };
  }

  /** A sentence about this file: what is wrong, and what to do. */
  error(what) {
    return new Error(`${this.what} ${what}; the file is damaged or not a model file, so delete the model in Settings and download it again, or convert the weights again with weights-tools`);
  }
}

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);
