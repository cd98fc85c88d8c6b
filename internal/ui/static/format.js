// format.js — shared formatting: verdicts with a glyph each (never colour
// alone), percentages, durations, HTML escaping.

const known = new Set(['ok', 'suspect', 'faulty', 'slow']);

// verdictOf is a health row's verdict; a verdict this page does not know is
// shown as it is, drawn like "suspect".
export function verdictOf(row) {
  if (!row) return 'none';
  return row.verdict || 'ok';
}
export function verdictClass(v) { return known.has(v) || v === 'none' ? v : 'suspect'; }
export function glyph(v) {
  return { ok: '✓', suspect: '!', slow: '~', faulty: '✕', none: '·' }[v] ?? '?';
}
export function pct(x) {
  if (typeof x !== 'number' || !isFinite(x)) return '—';
  if (x === 0) return '0%';
  return (x * 100).toFixed(x < 0.001 ? 3 : x < 0.1 ? 2 : 1) + '%';
}
export function ms(sec) {
  if (typeof sec !== 'number' || !isFinite(sec)) return '—';
  const m = sec * 1e3;
  return (m < 1 ? m.toFixed(3) : m < 100 ? m.toFixed(2) : m.toFixed(0)) + ' ms';
}
export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}
// shortId shortens a silent placeholder ("*<route>/<pos>") to "*".
export function shortId(id) { return id.startsWith('*') ? '*' : id; }
