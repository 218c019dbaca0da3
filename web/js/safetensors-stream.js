// Reads a safetensors file as its bytes arrive: the header first, then each tensor is handed to
// `onTensor(name, dtype, shape, bytes)` as soon as its bytes are complete, so no more than one
// tensor is ever held in memory.

export class SafetensorsStream {
  constructor(onTensor, what = 'the weights file') {
    this.onTensor = onTensor;
    this.what = what;
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
    while (at < chunk.length && this.next < this.tensors.length) {
      const t = this.tensors[this.next];
      if (this.offset < t.begin) { // a gap before the tensor: skip it
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
      if (this.filled === this.buffer.length) {
        const bytes = this.buffer;
        this.buffer = null;
        this.next += 1;
        this.onTensor(t.name, t.dtype, t.shape, bytes);
      }
    }
  }

  /** Call after the last byte: throws if the file ended before its last tensor. */
  finish() {
    if (this.tensors === null || this.next < this.tensors.length) {
      throw new Error(`${this.what} ended before all its tensors arrived; it is truncated`);
    }
  }

  readHeader(chunk) {
    const joined = new Uint8Array(this.head.length + chunk.length);
    joined.set(this.head);
    joined.set(chunk, this.head.length);
    if (joined.length < 8) { this.head = joined; return null; }
    const view = new DataView(joined.buffer, joined.byteOffset, 8);
    const length = Number(view.getBigUint64(0, true));
    if (length > 100 * 2 ** 20) throw new Error(`${this.what} is not a safetensors file (header of ${length} bytes)`);
    if (joined.length < 8 + length) { this.head = joined; return null; }
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(joined.subarray(8, 8 + length)));
    } catch {
      throw new Error(`${this.what} is not a safetensors file (its header is not JSON)`);
    }
    this.tensors = Object.entries(header)
      .filter(([name]) => name !== '__metadata__')
      .map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, begin: t.data_offsets[0], end: t.data_offsets[1] }))
      .sort((a, b) => a.begin - b.begin);
    this.head = null;
    return joined.subarray(8 + length);
  }
}
