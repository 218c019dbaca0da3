// The streaming safetensors reader (web/js/safetensors-stream.js) that feeds downloaded weights
// to the GPU: good files in any cut of their bytes, and every way a header can lie, each refused
// with a sentence naming the file and the tensor. Plain node, no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SafetensorsStream } from '../../web/js/safetensors-stream.js';

/** A safetensors file: the 8-byte header length, the JSON header, then `data` bytes. */
function file(header, data = new Uint8Array(0)) {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Read `bytes` in pieces of `piece` bytes; the tensors as `[name, dtype, shape, bytes]`. */
function read(bytes, { piece = bytes.length, size = bytes.length } = {}) {
  const got = [];
  const stream = new SafetensorsStream((...t) => got.push([t[0], t[1], t[2], Array.from(t[3])]), 'unet/model.safetensors', size);
  for (let at = 0; at < bytes.length; at += piece) stream.push(bytes.subarray(at, at + piece));
  stream.finish();
  return got;
}

const data = Uint8Array.from({ length: 14 }, (_, i) => i + 1);
// Listed out of order, with an empty tensor and a 2-byte gap between `a` and `b`.
const good = file({
  __metadata__: { format: 'pt' },
  b: { dtype: 'F32', shape: [2], data_offsets: [6, 14] },
  a: { dtype: 'F16', shape: [2, 1], data_offsets: [0, 4] },
  empty: { dtype: 'F32', shape: [0, 3], data_offsets: [14, 14] },
}, data);

test('a good file gives each tensor once, in order of its bytes, however its bytes are cut', () => {
  const expected = [
    ['a', 'F16', [2, 1], [1, 2, 3, 4]],
    ['b', 'F32', [2], [7, 8, 9, 10, 11, 12, 13, 14]],
    ['empty', 'F32', [0, 3], []],
  ];
  for (const piece of [1, 2, 3, 7, 8, 50, good.length]) assert.deepEqual(read(good, { piece }), expected, `pieces of ${piece}`);
  assert.deepEqual(read(good, { size: null }), expected, 'without a known length');
});

test('a file cut short is named as truncated, with the tensor it lacks', () => {
  assert.throws(() => read(good.subarray(0, good.length - 3), { size: good.length }), /^Error: unet\/model\.safetensors ended before its tensor "b" did; it is truncated;/);
  assert.throws(() => read(good.subarray(0, 20), { size: good.length }), /ended before its header did; it is truncated/);
});

/** What reading a file with `entries` (and `data` bytes) throws; asserts it is a sentence, not a RangeError. */
function refusal(entries, { data: bytes = new Uint8Array(64), size } = {}) {
  const bytesOf = file(entries, bytes);
  let thrown = null;
  try {
    read(bytesOf, { size: size === undefined ? bytesOf.length : size });
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown, `accepted ${JSON.stringify(entries)}`);
  assert.equal(thrown.constructor, Error, `${thrown.name}: ${thrown.message}`);
  assert.match(thrown.message, /^unet\/model\.safetensors .+; the file is damaged or not a model file, so delete the model in Settings and download it again, or convert the weights again with weights-tools$/);
  return thrown.message;
}

test('every lying header entry is refused with a sentence naming the file and the tensor', () => {
  const t = (over) => ({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16], ...over } });
  const cases = {
    notObject: [{ w: [1, 2] }, /tensor "w": it is not an object/],
    unknownDtype: [t({ dtype: 'F128' }), /tensor "w": its dtype "F128" is not a safetensors dtype/],
    missingDtype: [t({ dtype: undefined }), /its dtype undefined is not/],
    negativeDim: [t({ shape: [-2, 2] }), /tensor "w": its shape is not a list of non-negative integers/],
    fractionalDim: [t({ shape: [1.5, 2] }), /its shape is not a list/],
    stringDim: [t({ shape: ['2', 2] }), /its shape is not a list/],
    shapeNotList: [t({ shape: 4 }), /its shape is not a list/],
    unsafeDim: [t({ shape: [2 ** 60, 1] }), /its shape is not a list/],
    offsetsMissing: [t({ data_offsets: undefined }), /tensor "w": its data_offsets are not two non-negative integers/],
    offsetsThree: [t({ data_offsets: [0, 8, 16] }), /its data_offsets are not two/],
    offsetNegative: [t({ data_offsets: [-16, 0] }), /its data_offsets are not two/],
    offsetFraction: [t({ data_offsets: [0, 16.5] }), /its data_offsets are not two/],
    offsetsBackwards: [t({ data_offsets: [16, 0] }), /tensor "w": its data_offsets begin at 16, after their end 0/],
    spanTooShort: [t({ data_offsets: [0, 12] }), /tensor "w": its shape \[2, 2\] of F32 needs 16 bytes but its data_offsets span 12/],
    spanTooLong: [t({ dtype: 'F16' }), /needs 8 bytes but its data_offsets span 16/],
    numelOverflow: [t({ shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 16] }), /needs \d+ bytes but its data_offsets span 16/],
    hugeTensor: [t({ dtype: 'U8', shape: [2 ** 32], data_offsets: [0, 2 ** 32] }), /tensor "w": it is 4294967296 bytes, more than the 2147483648 one tensor may be/, null],
    overlap: [{ a: { dtype: 'U8', shape: [8], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [8], data_offsets: [4, 12] } }, /has tensor "b" overlapping the tensor before it \(it starts at byte 4 of the data, before byte 8\)/],
    pastTheEnd: [{ w: { dtype: 'U8', shape: [80], data_offsets: [0, 80] } }, /has tensors up to byte \d+ but is \d+ bytes long/],
  };
  for (const [name, [entries, message, size]] of Object.entries(cases)) {
    assert.match(refusal(entries, { size }), message, name);
  }
});

test('a header that is not a safetensors header is refused before any tensor', () => {
  assert.match(refusal([1, 2]), /is not a safetensors file \(its header is not a JSON object\)/);
  assert.match(refusal(null), /its header is not a JSON object/);
  const notJson = new Uint8Array(16);
  new DataView(notJson.buffer).setBigUint64(0, 8n, true);
  notJson.set(new TextEncoder().encode('{"w":[1,'), 8);
  assert.throws(() => read(notJson), /^Error: unet\/model\.safetensors is not a safetensors file \(its header is not JSON\);/);
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
  assert.throws(() => read(huge), /is not a safetensors file \(its header claims \d+ bytes\)/);
});
