// topology.js — the fabric as SVG: tiers from the server's layout (hosts at
// the bottom), one <g class="link"> per pair of linked nodes whatever the
// directions, split in two halves: the half at a node's end is the direction
// leaving that node, coloured and dashed by its verdict. The viewBox is fixed
// so the drawing never changes the page's layout.

import { verdictOf, verdictClass, glyph, pct, esc, shortId } from './format.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 1200, H = 440, MX = 90, MY = 30;

export class Topology {
  constructor(svg, tooltip, { onSelect }) {
    this.svg = svg;
    this.tip = tooltip;
    this.onSelect = onSelect;
    this.structure = '';
    this.pos = new Map();
    this.groups = new Map(); // pair key → <g>
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    svg.addEventListener('mouseover', (e) => this.hover(e));
    svg.addEventListener('mouseleave', () => { this.tip.hidden = true; });
    svg.addEventListener('click', (e) => {
      const g = e.target.closest('g.link');
      this.onSelect(g ? { a: g.dataset.a, b: g.dataset.b } : null);
    });
    svg.addEventListener('keydown', (e) => {
      const g = e.target.closest && e.target.closest('g.link');
      if (g && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); this.onSelect({ a: g.dataset.a, b: g.dataset.b }); }
    });
    svg.addEventListener('focusin', (e) => this.hover(e));
  }

  // render draws layout and links; it rebuilds the DOM only when nodes or
  // links changed and otherwise just updates verdicts and widths.
  render(layout, links, health) {
    this.health = health;
    const pairs = pairLinks(links);
    const structure = layout.nodes.map((n) => `${n.id}@${n.tier}.${n.order}`).join(',') + '|' + [...pairs.keys()].join(',');
    if (structure !== this.structure) {
      this.structure = structure;
      this.build(layout, pairs);
    }
    this.update(pairs);
  }

  build(layout, pairs) {
    const svg = this.svg;
    svg.replaceChildren();
    this.pos.clear();
    this.groups.clear();
    const count = new Map();
    for (const n of layout.nodes) count.set(n.tier, (count.get(n.tier) || 0) + 1);
    const tiers = Math.max(layout.tiers, 2);
    const y = (t) => H - MY - (t * (H - 2 * MY)) / (tiers - 1);
    for (const n of layout.nodes) {
      const c = count.get(n.tier);
      this.pos.set(n.id, { x: MX + ((n.order + 0.5) * (W - MX - 20)) / c, y: y(n.tier), n });
    }
    const tierLayer = el('g', { class: 'tiers' });
    for (let t = 0; t < layout.tiers; t++) {
      const label = t === 0 ? 'hosts' : t === 1 ? 'first hop' : `tier ${t}`;
      tierLayer.append(el('text', { class: 'tier', x: 6, y: y(t) + 4 }, label));
    }
    const linkLayer = el('g', { class: 'links' });
    for (const [key, p] of pairs) {
      const a = this.pos.get(p.a), b = this.pos.get(p.b);
      if (!a || !b) continue;
      const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
      const g = el('g', { class: 'link', 'data-a': p.a, 'data-b': p.b, tabindex: '-1', role: 'button' });
      g.append(
        el('line', { class: 'half', 'data-dir': 'ab', 'data-src': p.a, 'data-dst': p.b, x1: a.x, y1: a.y, x2: mx, y2: my }),
        el('line', { class: 'half', 'data-dir': 'ba', 'data-src': p.b, 'data-dst': p.a, x1: b.x, y1: b.y, x2: mx, y2: my }),
        el('line', { class: 'hit', x1: a.x, y1: a.y, x2: b.x, y2: b.y }),
        el('text', { class: 'tag', x: mx + 4, y: my - 4 }),
      );
      linkLayer.append(g);
      this.groups.set(key, g);
    }
    const nodeLayer = el('g', { class: 'nodes' });
    const hostCount = count.get(0) || 0;
    for (const [id, p] of this.pos) {
      const g = el('g', { class: 'node', 'data-node': id, 'data-kind': p.n.kind, transform: `translate(${p.x},${p.y})` });
      g.append(el('title', {}, p.n.kind === 'silent' ? `silent hop (no answer) ${id}` : `${p.n.kind} ${id}${p.n.rack ? ' (rack ' + p.n.rack + ')' : ''}`));
      if (p.n.kind === 'host') g.append(el('rect', { x: -4, y: -4, width: 8, height: 8 }));
      else if (p.n.kind === 'silent') g.append(el('path', { d: 'M0,-7 L7,0 L0,7 L-7,0 Z' }));
      else g.append(el('circle', { r: 6 }));
      const showLabel = p.n.kind === 'router' || (p.n.kind === 'host' && hostCount <= 48);
      if (showLabel) g.append(el('text', { x: 0, y: p.n.kind === 'host' ? 16 : -10, 'text-anchor': 'middle' }, shortId(id)));
      nodeLayer.append(g);
    }
    svg.append(tierLayer, linkLayer, nodeLayer);
    svg.dataset.links = String(this.groups.size);
  }

  update(pairs) {
    let maxRoutes = 1;
    for (const p of pairs.values()) maxRoutes = Math.max(maxRoutes, p.routesAB + p.routesBA);
    for (const [key, p] of pairs) {
      const g = this.groups.get(key);
      if (!g) continue;
      const rAB = this.health.get(p.a + '>' + p.b), rBA = this.health.get(p.b + '>' + p.a);
      const vAB = p.ab ? verdictClass(verdictOf(rAB)) : 'none', vBA = p.ba ? verdictClass(verdictOf(rBA)) : 'none';
      const routes = p.routesAB + p.routesBA;
      const width = (1.5 + 6 * Math.sqrt(routes / maxRoutes)).toFixed(1);
      const [hab, hba, , tag] = g.children;
      set(hab, { 'data-verdict': vAB, 'stroke-width': width });
      set(hba, { 'data-verdict': vBA, 'stroke-width': width });
      const worst = worse(vAB, vBA);
      set(g, { 'data-verdict': worst, 'data-routes': routes, 'aria-label': `link ${p.a} – ${p.b}: ${worst}` });
      const bad = [[vAB, rAB], [vBA, rBA]].filter(([v]) => v === 'faulty' || v === 'suspect' || v === 'slow');
      tag.textContent = bad.length ? bad.map(([v, r]) => `${glyph(v)} ${r && r.estimatedLoss > 0 ? pct(r.estimatedLoss) : v}`).join(' ') : '';
      set(tag, { 'data-verdict': worst });
      // Suspect and faulty links are keyboard stops; the health table
      // reaches every link.
      g.setAttribute('tabindex', worst === 'ok' || worst === 'none' ? '-1' : '0');
    }
  }

  // highlight marks the links and nodes on the given routes (hop lists) and
  // dims the rest; null clears.
  highlight(routes, selected) {
    for (const g of this.svg.querySelectorAll('.hl, .sel')) g.classList.remove('hl', 'sel');
    if (!routes) { this.svg.classList.remove('selecting'); return; }
    this.svg.classList.add('selecting');
    for (const hops of routes) {
      for (let i = 0; i < hops.length; i++) {
        const n = this.svg.querySelector(`g.node[data-node="${CSS.escape(hops[i])}"]`);
        if (n) n.classList.add('hl');
        if (i > 0) {
          const g = this.groups.get(pairKey(hops[i - 1], hops[i]));
          if (g) g.classList.add('hl');
        }
      }
    }
    if (selected) {
      const g = this.groups.get(pairKey(selected.a, selected.b));
      if (g) g.classList.add('hl', 'sel');
    }
  }

  hover(e) {
    const g = e.target.closest && e.target.closest('g.link');
    if (!g) { this.tip.hidden = true; return; }
    const { a, b } = g.dataset;
    const rows = [[a, b], [b, a]].map(([s, d]) => ({ s, d, r: this.health.get(s + '>' + d) }));
    this.tip.innerHTML = rows.map(({ s, d, r }) => rowHTML(s, d, r)).join('<hr>');
    const box = this.svg.getBoundingClientRect();
    const at = e.clientX ? { x: e.clientX - box.left, y: e.clientY - box.top } : { x: box.width / 2, y: 20 };
    this.tip.style.left = Math.min(at.x + 12, box.width - 320) + 'px';
    this.tip.style.top = Math.min(at.y + 12, box.height - 160) + 'px';
    this.tip.hidden = false;
  }
}

function rowHTML(s, d, r) {
  if (!r) return `<b>${esc(s)} → ${esc(d)}</b><br>no health row (no routes cross it this way)`;
  const v = verdictClass(verdictOf(r));
  const extra = [];
  if (typeof r.estimatedDelaySeconds === 'number') extra.push(`<tr><td>est. delay</td><td>${(r.estimatedDelaySeconds * 1e3).toFixed(3)} ms</td></tr>`);
  if (typeof r.delayExcessSeconds === 'number') extra.push(`<tr><td>delay excess</td><td>${(r.delayExcessSeconds * 1e3).toFixed(3)} ms</td></tr>`);
  return `<b>${esc(s)} → ${esc(d)}</b> <span data-verdict="${v}" class="v">${glyph(v)} ${esc(v)}</span>
<table><tr><td>suspicion</td><td>${num(r.suspicion)}</td></tr>
<tr><td>est. loss</td><td>${pct(r.estimatedLoss)}</td></tr>
<tr><td>loss through / not</td><td>${pct(r.avgLossThrough)} / ${pct(r.avgLossNotThrough)}</td></tr>
<tr><td>routes through</td><td>${r.routesThrough ?? '—'} (${r.samplesThrough ?? '—'} samples)</td></tr>${extra.join('')}</table>
${r.evidence ? `<div>${esc(r.evidence)}</div>` : ''}`;
}

const num = (x) => (typeof x === 'number' ? x.toFixed(4) : '—');
const rank = { faulty: 4, slow: 3, suspect: 2, ok: 1, none: 0 };
function worse(a, b) { return (rank[a] ?? 1) >= (rank[b] ?? 1) ? a : b; }

export function pairKey(a, b) { return a < b ? a + '|' + b : b + '|' + a; }

// pairLinks folds directed links into one entry per node pair.
function pairLinks(links) {
  const m = new Map();
  for (const l of links) {
    const key = pairKey(l.src, l.dst);
    let p = m.get(key);
    if (!p) {
      const [a, b] = l.src < l.dst ? [l.src, l.dst] : [l.dst, l.src];
      p = { a, b, ab: false, ba: false, routesAB: 0, routesBA: 0 };
      m.set(key, p);
    }
    if (l.src === p.a) { p.ab = true; p.routesAB = l.routes || 0; } else { p.ba = true; p.routesBA = l.routes || 0; }
  }
  return new Map([...m.entries()].sort((x, y) => (x[0] < y[0] ? -1 : 1)));
}

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  set(e, attrs);
  if (text !== undefined) e.textContent = text;
  return e;
}
function set(e, attrs) { for (const k in attrs) e.setAttribute(k, attrs[k]); }
