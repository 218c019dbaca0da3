// The iframe embedding page: the widget configured from the query string (`model`, `origins`
// = the space- or comma-separated origins allowed to drive it with postMessage, `quality`, and
// defaults). The parent sends `generate`, `extend` (the next clip of the last video) or `cancel`.
import './widget.js';

const params = new URLSearchParams(location.search);
const widget = document.querySelector('i2v-generator');
for (const [name, value] of params) {
  if (name === 'origins') widget.setAttribute('allowed-origins', value.replaceAll(',', ' '));
  else widget.setAttribute(name, value);
}
// Re-connect so the allow-list takes effect.
widget.remove();
document.body.append(widget);
