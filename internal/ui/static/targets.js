// targets.js — external targets and their paths, when the server has them
// (/v1/targets, /v1/paths; a 404 hides the section). The shapes are read
// generically: scalar fields become columns, numeric arrays sparklines,
// and hop lists are joined; a path whose hops changed is marked.

import { esc } from './format.js';

export function listOf(doc) {
  if (Array.isArray(doc)) return doc;
  if (doc && typeof doc === 'object') {
    for (const k of ['targets', 'paths', 'items', 'rows']) if (Array.isArray(doc[k])) return doc[k];
    const arr = Object.values(doc).find(Array.isArray);
    if (arr) return arr;
  }
  return [];
}

export function renderTable(container, doc) {
  const rows = listOf(doc).filter((r) => r && typeof r === 'object');
  if (!rows.length) { container.innerHTML = '<p class="muted">none</p>'; return; }
  const cols = [];
  for (const r of rows.slice(0, 20)) for (const k of Object.keys(r)) if (!cols.includes(k) && cols.length < 10) cols.push(k);
  container.innerHTML = `<table><thead><tr>${cols.map((c) => `<th scope="col">${esc(c)}</th>`).join('')}</tr></thead><tbody>${
    rows.slice(0, 500).map((r) => `<tr${r.changed || r.pathChanged ? ' data-verdict="suspect"' : ''}>${cols.map((c) => `<td>${cell(r[c])}</td>`).join('')}</tr>`).join('')
  }</tbody></table>`;
}

function cell(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (Array.isArray(v)) {
    if (v.length && v.every((x) => typeof x === 'number')) return spark(v);
    if (v.every((x) => typeof x === 'string')) return esc(v.join(' → '));
    if (v.length && v.every((x) => x && Array.isArray(x.hops))) {
      // path history: one line per path, changes marked
      return v.slice(-5).map((p, i, a) => `${i > 0 && a[i - 1].hops.join() !== p.hops.join() ? '<b>changed</b> ' : ''}${esc(p.hops.join(' → '))}`).join('<br>');
    }
    return `${v.length} items`;
  }
  if (typeof v === 'object') return esc(JSON.stringify(v).slice(0, 120));
  return esc(v);
}

// spark is an inline SVG sparkline; NaN or negative points (losses) are dots.
function spark(xs) {
  const w = 100, h = 18, pts = xs.slice(-60);
  const ok = pts.filter((x) => x >= 0 && isFinite(x));
  const hi = Math.max(...ok, 1e-9), lo = Math.min(...ok, 0);
  const step = w / Math.max(pts.length - 1, 1);
  const line = pts.map((x, i) => (x >= 0 && isFinite(x) ? `${(i * step).toFixed(1)},${(h - 1 - ((x - lo) / (hi - lo || 1)) * (h - 2)).toFixed(1)}` : null)).filter(Boolean).join(' ');
  const lost = pts.map((x, i) => (x >= 0 && isFinite(x) ? '' : `<circle cx="${(i * step).toFixed(1)}" cy="${h - 2}" r="1.5"/>`)).join('');
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" aria-hidden="true"><polyline points="${line}"/>${lost}</svg>`;
}
