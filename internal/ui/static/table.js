// table.js — the /edges/health rows: faulty first, then by the chosen key,
// filtered by node. Fields this page does not know yet (from newer servers)
// are simply not shown; missing ones show "—".

import { verdictOf, verdictClass, glyph, pct, ms, esc } from './format.js';

const RANK = { faulty: 0, slow: 1, suspect: 2, ok: 3 };
const MAX_ROWS = 400;

export class HealthTable {
  constructor(tbody, { filter, sort, count, onSelect }) {
    this.tbody = tbody;
    this.filter = filter;
    this.sort = sort;
    this.count = count;
    this.onSelect = onSelect;
    this.rows = [];
    this.selected = null;
    filter.addEventListener('input', () => this.render());
    sort.addEventListener('change', () => this.render());
    tbody.addEventListener('click', (e) => {
      const b = e.target.closest('button[data-src]');
      if (b) this.onSelect({ src: b.dataset.src, dst: b.dataset.dst });
    });
  }

  setRows(rows) { this.rows = rows; this.render(); }
  select(sel) { this.selected = sel; this.render(); }

  render() {
    const q = this.filter.value.trim().toLowerCase();
    const key = this.sort.value;
    let rows = this.rows.filter((r) => !q || r.src.toLowerCase().includes(q) || r.dst.toLowerCase().includes(q));
    rows = rows.slice().sort((a, b) => {
      const ra = RANK[verdictOf(a)] ?? 2, rb = RANK[verdictOf(b)] ?? 2;
      if (ra !== rb) return ra - rb;
      return (b[key] ?? -Infinity) - (a[key] ?? -Infinity) || (b.suspicion ?? 0) - (a.suspicion ?? 0);
    });
    const shown = rows.slice(0, MAX_ROWS);
    const sel = this.selected;
    this.tbody.innerHTML = shown.map((r) => {
      const v = verdictOf(r), vc = verdictClass(v);
      const isSel = sel && ((sel.a === r.src && sel.b === r.dst) || (sel.a === r.dst && sel.b === r.src));
      return `<tr data-verdict="${vc}" data-src="${esc(r.src)}" data-dst="${esc(r.dst)}"${isSel ? ' class="sel"' : ''}>
<td><span class="v">${glyph(vc)} ${esc(v)}</span></td>
<td><button type="button" data-src="${esc(r.src)}" data-dst="${esc(r.dst)}" title="show on the map and list the routes through it">${esc(r.src)} → ${esc(r.dst)}</button></td>
<td class="num">${typeof r.suspicion === 'number' ? r.suspicion.toFixed(4) : '—'}</td>
<td class="num">${pct(r.estimatedLoss)}</td>
<td class="num">${ms(r.estimatedDelaySeconds)}</td>
<td class="num">${pct(r.avgLossThrough)} / ${pct(r.avgLossNotThrough)}</td>
<td class="num">${r.routesThrough ?? '—'}</td>
<td class="evidence">${esc(r.evidence || '')}</td></tr>`;
    }).join('');
    const bad = this.rows.filter((r) => verdictOf(r) !== 'ok').length;
    this.count.textContent = `${rows.length} of ${this.rows.length} links` + (bad ? `, ${bad} not ok` : '') + (rows.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown)` : '');
  }
}
