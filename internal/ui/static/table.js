// table.js — the /edges/health rows: faulty first, then by the chosen key,
// filtered by node. Fields this page does not know yet (from newer servers)
// are simply not shown; missing ones show "—".

import { verdictOf, verdictClass, glyph, pct, ms, esc, shortId } from './format.js';

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
    this.trs = new Map(); // "src>dst" → its <tr>
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
    // Re-sort only when what decides the order's meaning changed (filter,
    // sort key, a verdict, the set of links); otherwise keep the rows where
    // they are and update their values, so the table can be read while the
    // figures stream.
    const sig = q + '|' + key + '|' + rows.map((r) => r.src + '>' + r.dst + ':' + verdictOf(r)).sort().join(',');
    if (sig !== this.sig) {
      this.sig = sig;
      rows = rows.slice().sort((a, b) => {
        const ra = RANK[verdictOf(a)] ?? 2, rb = RANK[verdictOf(b)] ?? 2;
        if (ra !== rb) return ra - rb;
        return (b[key] ?? -Infinity) - (a[key] ?? -Infinity) || (b.suspicion ?? 0) - (a.suspicion ?? 0);
      });
      this.order = rows.map((r) => r.src + '>' + r.dst);
    } else {
      const byKey = new Map(rows.map((r) => [r.src + '>' + r.dst, r]));
      rows = this.order.map((k) => byKey.get(k));
    }
    const shown = rows.slice(0, MAX_ROWS);
    const sel = this.selected;
    // Rows are kept per link and updated in place, so a focused button
    // keeps its focus and nothing flickers as the rows refresh.
    const want = shown.map((r) => {
      const key = r.src + '>' + r.dst;
      let tr = this.trs.get(key);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.src = r.src;
        tr.dataset.dst = r.dst;
        tr.innerHTML = '<td></td><td><button type="button" title="show on the map and list the routes through it"></button></td>' +
          '<td class="num"></td><td class="num"></td><td class="num"></td><td class="num"></td><td class="num"></td><td class="evidence"></td>';
        const b = tr.querySelector('button');
        b.dataset.src = r.src;
        b.dataset.dst = r.dst;
        b.textContent = `${shortId(r.src)} → ${shortId(r.dst)}`;
        if (r.src.startsWith('*') || r.dst.startsWith('*')) b.title += ` (* is a silent hop: ${r.src} → ${r.dst})`;
        this.trs.set(key, tr);
      }
      const v = verdictOf(r), vc = verdictClass(v);
      const isSel = !!sel && ((sel.a === r.src && sel.b === r.dst) || (sel.a === r.dst && sel.b === r.src));
      if (tr.dataset.verdict !== vc) tr.dataset.verdict = vc;
      tr.classList.toggle('sel', isSel);
      const cells = [
        `<span class="v">${glyph(vc)} ${esc(v)}</span>`, null,
        typeof r.suspicion === 'number' ? r.suspicion.toFixed(4) : '—',
        pct(r.estimatedLoss), ms(r.estimatedDelaySeconds),
        `${pct(r.avgLossThrough)} / ${pct(r.avgLossNotThrough)}`,
        String(r.routesThrough ?? '—'), esc(r.evidence || ''),
      ];
      cells.forEach((html, i) => {
        if (html !== null && tr.cells[i].innerHTML !== html) tr.cells[i].innerHTML = html;
      });
      return tr;
    });
    const keep = new Set(want);
    for (const tr of [...this.tbody.children]) if (!keep.has(tr)) tr.remove();
    want.forEach((tr, i) => {
      if (this.tbody.children[i] !== tr) this.tbody.insertBefore(tr, this.tbody.children[i] || null);
    });
    const bad = this.rows.filter((r) => verdictOf(r) !== 'ok').length;
    this.count.textContent = `${rows.length} of ${this.rows.length} links` + (bad ? `, ${bad} not ok` : '') + (rows.length > MAX_ROWS ? ` (first ${MAX_ROWS} shown)` : '');
  }
}
