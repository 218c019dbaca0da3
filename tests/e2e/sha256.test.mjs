// The streaming SHA-256 (web/js/sha256.js) that verifies downloads: the FIPS 180-4 test vectors,
// 1 MB fed in uneven pieces, and a hash saved mid-stream and restored as a resumed download does.
// Plain node, no browser; node's crypto is the reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Sha256 } from '../../web/js/sha256.js';

const text = (s) => new TextEncoder().encode(s);

test('the standard vectors: empty, "abc", the 448-bit message and a million "a"', () => {
  assert.equal(new Sha256().digest(), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  assert.equal(new Sha256().update(text('abc')).digest(), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(new Sha256().update(text('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')).digest(), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  assert.equal(new Sha256().update(new Uint8Array(1_000_000).fill(0x61)).digest(), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
});

test('1 MB of random bytes fed in uneven pieces matches node crypto, at every length near a block edge', () => {
  const bytes = new Uint8Array(randomBytes(1 << 20));
  const sha = new Sha256();
  for (let at = 0, step = 1; at < bytes.length; at += step, step = (step * 7 + 3) % 5000) sha.update(bytes.subarray(at, at + step));
  assert.equal(sha.digest(), createHash('sha256').update(bytes).digest('hex'));
  for (let n = 50; n < 140; n++) {
    assert.equal(new Sha256().update(bytes.subarray(0, n)).digest(), createHash('sha256').update(bytes.subarray(0, n)).digest('hex'), `${n} bytes`);
  }
});

test('a state saved after a whole chunk and restored continues the same hash; a partial block is not saved', () => {
  const bytes = new Uint8Array(randomBytes(3 * 4096 + 100));
  const first = new Sha256().update(bytes.subarray(0, 8192));
  const state = first.save();
  assert.match(state, /^[0-9a-f]{64}:8192$/);
  const resumed = Sha256.restore(state).update(bytes.subarray(8192));
  assert.equal(resumed.digest(), createHash('sha256').update(bytes).digest('hex'));
  assert.equal(new Sha256().update(bytes.subarray(0, 100)).save(), null);
  for (const bad of ['', 'x:1', `${'0'.repeat(64)}:65`, null]) assert.equal(Sha256.restore(bad), null);
});
