// The iframe embedding page: the widget configured from the query string (`model`, `origins`
// = the space- or comma-separated origins allowed to drive it with postMessage, `quality`, and
// defaults). The parent sends `generate`, `extend` (the next clip of the last video) or `cancel`.
//
// Only the parameters below reach the element, each checked for its type and bounds: the page
// may be served by a static host without our CSP header, and an attribute such as `onfocus`
// copied from a link would run script on this origin.
import './widget.js';

const text = (max, pattern = /^/) => (value) => (value.length <= max && pattern.test(value) ? value : null);
const number = (min, max, integer = false) => (value) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) return null;
  const clamped = Math.min(max, Math.max(min, n));
  return String(integer ? Math.round(clamped) : clamped);
};
const oneOf = (...values) => (value) => (values.includes(value) ? value : null);
const httpUrl = (value) => (value.length <= 500 && /^https?:\/\/[^\s]+$/.test(value) ? value : null);
const origins = (value) => {
  const list = value.split(/[\s,]+/).filter(Boolean);
  const ok = list.length <= 20 && list.every((o) => { try { return /^https?:$/.test(new URL(o).protocol) && new URL(o).origin === o; } catch { return false; } });
  return ok ? list.join(' ') : null;
};

/** Query parameter → [attribute, check]; a check returns the attribute's value or null to refuse it. */
const PARAMETERS = {
  model: ['model', (v) => oneOf('demo')(v) ?? httpUrl(v) ?? text(200, /^[\w.-]+\/[\w.-]+$/)(v)],
  'hub-base': ['hub-base', httpUrl],
  revision: ['revision', text(100, /^[\w.-]+$/)],
  origins: ['allowed-origins', origins],
  quality: ['quality', oneOf('reference', 'balanced', 'fast')],
  precision: ['precision', oneOf('auto', 'f32')],
  width: ['width', number(16, 2048, true)],
  height: ['height', number(16, 2048, true)],
  frames: ['frames', number(1, 128, true)],
  fps: ['fps', number(1, 60, true)],
  steps: ['steps', number(1, 200, true)],
  guidance: ['guidance', number(0, 50)],
  seed: ['seed', number(0, 2 ** 32 - 1, true)],
  budget: ['budget', number(0, 1000)],
  'negative-prompt': ['negative-prompt', text(2000)],
};

const widget = document.querySelector('i2v-generator');
for (const [name, value] of new URLSearchParams(location.search)) {
  const [attribute, check] = PARAMETERS[name] ?? [];
  const checked = check?.(value) ?? null;
  if (checked === null) console.warn(`embed.html: the parameter "${name}" is ${check ? 'out of its bounds or not of its type' : 'not one the widget takes'}; it is ignored.`);
  else widget.setAttribute(attribute, checked);
}
// Re-connect so the allow-list takes effect.
widget.remove();
document.body.append(widget);
