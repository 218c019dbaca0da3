// WebM (VP8) from RGB frames: WebCodecs encodes, Mediabunny (npm, maintained) muxes.
import { BufferTarget, Output, QUALITY_HIGH, VideoSample, VideoSampleSource, WebMOutputFormat } from '../node_modules/mediabunny/dist/bundles/mediabunny.min.mjs';

/** `frames`: Uint8Arrays of width×height RGBA. Resolves to a `video/webm` Blob. */
export async function encodeWebm(frames, width, height, fps) {
  if (typeof VideoEncoder === 'undefined') {
    throw new Error('This browser cannot encode video (no WebCodecs); download the GIF instead.');
  }
  const output = new Output({ format: new WebMOutputFormat(), target: new BufferTarget() });
  const source = new VideoSampleSource({ codec: 'vp8', bitrate: QUALITY_HIGH, keyFrameInterval: 1 });
  output.addVideoTrack(source, { frameRate: fps });
  await output.start();
  for (let i = 0; i < frames.length; i++) {
    const sample = new VideoSample(frames[i], { format: 'RGBA', codedWidth: width, codedHeight: height, timestamp: i / fps, duration: 1 / fps });
    await source.add(sample);
    sample.close();
  }
  await output.finalize();
  return new Blob([output.target.buffer], { type: 'video/webm' });
}
