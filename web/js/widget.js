// <i2v-generator>: the generator as a custom element any site can embed with one module script.
//
//   <script type="module" src="https://YOUR-HOST/web/js/widget.js"></script>
//   <i2v-generator model="demo" frames="4" steps="3" width="40" height="24"></i2v-generator>
//
// Attributes: `model` ("demo", a hub repo id like "ali-vilab/i2vgen-xl", or the URL of a folder
// written by `weights-tools convert`), `hub-base`, `revision`, and defaults for `width`, `height`,
// `frames`, `fps`, `steps`, `guidance`, `seed`, `negative-prompt`; `quality` ("reference",
// "balanced" or "fast": steps and sampling; `steps` still wins); `budget` (the GPU memory it may
// use, in decimal GB: a size that needs more is refused with the memory plan's sentence);
// `precision` ("auto": f16 where the GPU has shader-f16, or "f32"); `allowed-origins`
// (space-separated) turns on the postMessage API for those origins (`generate`, `extend`,
// `cancel`). Without `width` and `height` the demo model runs at its own size and a real model
// at the largest size that fits (16:9 first).
// API: `el.generate({image, prompt, ...})` → Promise<{video, gif, note, width, height, frames,
// fps, request, unetEquivalents}> (`request`: what the worker ran; `video` or `gif` null when its
// encoder failed, `note` says why); errors carry a `code` (protocol.js); `el.extend({prompt?, ...})`: the
// next clip from the last frame, appended (the repeated frame once), same result shape, clip i
// of N in `progress` events (`detail.clip`, `detail.clips`); events `progress`, `preview`,
// `done`, `error`; `el.cancel()`. Theme with CSS custom properties `--i2v-accent`,
// `--i2v-radius`, `--i2v-font` or `::part(button|video|gif|status)`.
import { budgetBytes, demoSource, largestFit, sharedClient } from './client.js';

const STYLE = `
:host { display: block; font: var(--i2v-font, inherit); }
form { display: grid; gap: 0.5rem; }
button { background: var(--i2v-accent, #3557d4); color: white; border: 0; border-radius: var(--i2v-radius, 0.4rem); padding: 0.5rem 1rem; }
video, img { max-width: 100%; border-radius: var(--i2v-radius, 0.4rem); }
progress { width: 100%; }
`;
// A constructed stylesheet, not a <style> element: a page whose CSP has a strict `style-src`
// (ours does) refuses inline styles, but not stylesheets made by script.
const SHEET = new CSSStyleSheet();
SHEET.replaceSync(STYLE);

// What a request may set; the worker fills in the rest from the library's defaults.
const NUMBERS = ['width', 'height', 'frames', 'fps', 'steps', 'guidance', 'seed'];

export class I2VGenerator extends HTMLElement {
  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    root.adoptedStyleSheets = [SHEET];
    root.innerHTML = `
      <form part="form">
        <label>Image <input type="file" name="image" accept="image/png,image/jpeg,image/webp"></label>
        <label>Prompt <input type="text" name="prompt"></label>
        <button type="submit" part="button">Generate</button>
        <progress max="1" value="0" hidden></progress>
        <p part="status" role="status" aria-live="polite"></p>
        <video part="video" controls loop autoplay muted playsinline hidden></video>
        <img part="gif" alt="The generated video (GIF)" hidden>
      </form>`;
    this.$ = (sel) => root.querySelector(sel);
    this.$('form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const file = this.$('input[name="image"]').files[0];
      if (!file) { this.$('p').textContent = 'Choose an image first.'; return; }
      this.generate({ image: file, prompt: this.$('input[name="prompt"]').value }).catch(() => {});
    });
    this.running = null;
  }

  connectedCallback() {
    const origins = (this.getAttribute('allowed-origins') ?? '').split(/\s+/).filter(Boolean);
    if (origins.length && !this.onMessage) {
      this.onMessage = (event) => this.answer(event, origins);
      window.addEventListener('message', this.onMessage);
    }
  }

  disconnectedCallback() {
    if (this.onMessage) window.removeEventListener('message', this.onMessage);
    this.onMessage = null;
  }

  source() {
    const model = this.getAttribute('model') ?? 'ali-vilab/i2vgen-xl';
    if (model === 'demo') return demoSource(new URL('../../', import.meta.url).href);
    if (/^https?:/.test(model)) return { type: 'converted', url: model.endsWith('/') ? model : `${model}/` };
    return { type: 'hub', base: this.getAttribute('hub-base') ?? 'https://huggingface.co', repo: model, revision: this.getAttribute('revision') ?? 'main' };
  }

  /** Generate a video. `image`: a Blob/File or ArrayBuffer; other keys override the attributes. */
  async generate({ image, prompt, negativePrompt, noise, quality, ...options }) {
    if (this.running) throw new Error('A video is already being generated; cancel it first.');
    const request = { prompt: prompt ?? '', negativePrompt: negativePrompt ?? this.getAttribute('negative-prompt') ?? '' };
    for (const name of NUMBERS) {
      const value = options[name] ?? this.getAttribute(name);
      if (value !== null && value !== undefined) request[name] = Number(value);
    }
    const budget = budgetBytes(options.budget ?? this.getAttribute('budget'));
    if (budget !== undefined) request.budgetBytes = budget;
    const bytes = image instanceof ArrayBuffer ? image : await image.arrayBuffer();
    return this.run({ image: bytes, request, quality: quality ?? this.getAttribute('quality') ?? undefined, noise }, 1);
  }

  /**
   * Extend the last video: the next clip starts from its last frame, with the same request (its
   * prompt, or `prompt`; other keys override) and the next seed; the result is the video then the
   * new clip without its first frame.
   */
  async extend({ prompt, ...options } = {}) {
    if (this.running) throw new Error('A video is already being generated; cancel it first.');
    if (!this.last) throw new Error('There is no video to extend yet: generate one first.');
    const { video, request: last, clips } = this.last;
    const request = { ...last, seed: last.seed + 1, ...options, ...(prompt === undefined ? {} : { prompt }) };
    return this.run({ continues: video, request }, clips + 1);
  }

  /**
   * Run a `generate` request as clip `clip` of the video; resolves to the result. A request
   * without a size takes the demo model's own, or the largest that fits a real model.
   */
  async run(payload, clip) {
    // One worker per page: every widget (and the app) with this precision shares it.
    this.client ??= sharedClient({ precision: this.getAttribute('precision') ?? 'auto' });
    const status = this.$('p');
    const bar = this.$('progress');
    bar.hidden = false;
    const demo = this.getAttribute('model') === 'demo';
    const send = (kind, body) => {
      const { id, promise } = this.client.request(kind, { source: this.source(), defaults: demo ? 'demo' : undefined, ...body }, {
        onProgress: (p) => {
          const step = p.stage === 'denoising' ? `Step ${p.step} of ${p.steps}` : (p.message ?? p.stage);
          status.textContent = clip > 1 ? `Clip ${clip} of ${clip}: ${step}` : step;
          if (p.stage === 'denoising') bar.value = p.step / p.steps;
          this.dispatchEvent(new CustomEvent('progress', { detail: { ...p, clip, clips: clip } }));
        },
        onPreview: (p) => this.dispatchEvent(new CustomEvent('preview', { detail: p })),
      });
      this.running = id;
      return promise;
    };
    try {
      const { request, quality } = payload;
      if (!demo && !payload.continues && request.width === undefined && request.height === undefined) {
        const best = largestFit(await send('sizes', { request, quality, load: true }));
        if (best) payload = { ...payload, request: { ...request, width: best.width, height: best.height } };
      }
      const r = await send('generate', payload);
      const note = [r.refineError, r.videoNote].filter(Boolean).join(' ') || null;
      const result = { video: r.webm, gif: r.gif, note, width: r.width, height: r.height, frames: r.frames, fps: r.fps, request: r.request, unetEquivalents: r.unetEquivalents };
      this.last = { video: { rgba: r.rgba, width: r.width, height: r.height, frames: r.frames, fps: r.fps }, request: r.request, clips: clip };
      this.show(r);
      status.textContent = `${clip > 1 ? `Done: ${clip} clips, ${r.frames} frames.` : 'Done.'}${note ? ` ${note}` : ''}`;
      this.dispatchEvent(new CustomEvent('done', { detail: result }));
      return result;
    } catch (err) {
      status.textContent = clip > 1 ? `${err.message} The previous video is kept.` : err.message;
      this.dispatchEvent(new CustomEvent('error', { detail: { message: err.message, code: err.code, cancelled: err.code === 'cancelled' } }));
      throw err;
    } finally {
      this.running = null;
      bar.hidden = true;
    }
  }

  /**
   * Show a result in place of the one shown: the WebM, or the GIF when its encoder failed (`note`
   * says why). The blob URLs of the one replaced are revoked.
   */
  show({ webm, gif }) {
    const video = this.$('video');
    const img = this.$('img');
    for (const el of [video, img]) {
      if (el.src) URL.revokeObjectURL(el.src);
      el.removeAttribute('src');
    }
    const shown = webm ? video : gif ? img : null;
    if (shown) shown.src = URL.createObjectURL(webm ?? gif);
    video.hidden = shown !== video;
    img.hidden = shown !== img;
  }

  cancel() {
    if (this.running) this.client.cancel(this.running);
  }

  /** The postMessage API: `{kind: 'generate' | 'extend' | 'cancel', id, payload}` from an allowed origin. */
  async answer(event, origins) {
    if (!origins.includes(event.origin)) return; // not on the allow-list: ignored
    const { kind, id, payload } = event.data ?? {};
    const reply = (k, p) => event.source?.postMessage({ kind: k, id, payload: p }, event.origin);
    if (kind === 'cancel') { this.cancel(); return; }
    if (kind !== 'generate' && kind !== 'extend') return;
    const progress = (e) => reply('progress', e.detail);
    this.addEventListener('progress', progress);
    try {
      reply('result', await (kind === 'extend' ? this.extend(payload ?? {}) : this.generate(payload)));
    } catch (err) {
      reply('error', { message: err.message, code: err.code });
    } finally {
      this.removeEventListener('progress', progress);
    }
  }
}

if (!customElements.get('i2v-generator')) customElements.define('i2v-generator', I2VGenerator);
