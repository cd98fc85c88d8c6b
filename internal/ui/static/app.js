// app.js — the page: decides the view (the aggregator's when this node
// aggregates, else the agent's), follows the event stream into a local copy
// of the graph, and redraws the topology, health table, heatmap and
// drill-down at most once per animation frame. The health rows and the tier
// layout are derived on the server; they are refetched when the stream says
// routes or links changed (at most once a second).

import { getJSON, askToken, hasToken } from './api.js';
import { EventStream } from './sse.js';
import { Topology, pairKey } from './topology.js';
import { HealthTable } from './table.js';
import { Heatmap, pairMatrix } from './heatmap.js';
import { renderRoutes } from './routes.js';
import { renderTable } from './targets.js';
import { esc } from './format.js';

const $ = (id) => document.getElementById(id);

const state = {
  base: '/v1/graph',
  routes: new Map(), // id → route
  layout: null,
  health: new Map(), // "src>dst" → row
  healthRows: [],
  selection: null, // {kind:'link', a, b} | {kind:'pair', src, dst}
  gotSnapshot: false,
  healthLoaded: false,
  firstPaint: false, // topology and table drawn
  routesPainted: false, // heatmap drawn from the snapshot's routes
};

let topo, table, heat;

async function main() {
  topo = new Topology($('topo-svg'), $('tooltip'), { onSelect: (l) => select(l ? { kind: 'link', a: l.a, b: l.b } : null) });
  table = new HealthTable($('health-table').tBodies[0], {
    filter: $('health-filter'), sort: $('health-sort'), count: $('health-count'),
    onSelect: (r) => select({ kind: 'link', a: r.src, b: r.dst }),
  });
  heat = new Heatmap($('heatmap'), $('heat-tip'), {
    onSelect: (src, dst) => select({ kind: 'pair', src, dst }),
    onCursor: (text) => { $('heat-cursor').textContent = text; },
  });
  $('heat-metric').addEventListener('change', () => schedule('heat'));
  $('clear-selection').addEventListener('click', () => select(null));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && state.selection) select(null); });

  // /healthz is open: it says whether this node aggregates and whether a
  // token is needed, so the page asks for it before any data request.
  let hz;
  while (!hz) {
    hz = await fetch('/healthz', { cache: 'no-store' }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
    if (!hz) {
      onState('down', 'node unreachable, retrying');
      await new Promise((res) => setTimeout(res, 2000));
    }
  }
  if (hz.aggregator) state.base = '/v1/aggregator/graph';
  $('view').textContent = hz.aggregator ? 'aggregator view: every agent\'s routes' : 'agent view: this node\'s routes';
  if (hz.auth && !hasToken()) {
    onState('down', 'waiting for the API token');
    await askToken();
  }

  // The fabric first (small documents), then the stream, whose snapshot
  // carries every route and would otherwise compete with them.
  await Promise.all([refresh.layout(), refresh.health()]);
  const events = hz.aggregator ? '/v1/aggregator/events/graph' : '/v1/events/graph';
  new EventStream(events, { onEvent, onState }).start();
  setInterval(() => refresh.health(), 5000);
  targets();
}

// --- stream ---------------------------------------------------------------

function onState(s, detail) {
  const el = $('stream');
  el.dataset.state = s;
  el.querySelector('.glyph').textContent = { live: '●', connecting: '◌', down: '✕' }[s];
  el.querySelector('.text').textContent = { live: 'live', connecting: 'connecting', down: 'stream down' }[s] + (detail ? ` (${detail})` : '');
}

function onEvent(type, d) {
  let topoChanged = false;
  switch (type) {
    case 'snapshot':
      state.routes = new Map((d.routes || []).map((r) => [r.id, r]));
      state.gotSnapshot = true;
      topoChanged = true;
      break;
    // nodes and links come with the layout, refetched on any change
    case 'node-add': case 'node-remove': case 'link-add': case 'link-remove': topoChanged = true; break;
    case 'route-add': if (d.route) state.routes.set(d.route.id, d.route); topoChanged = true; break;
    case 'route-update': if (d.route) state.routes.set(d.route.id, d.route); break;
    case 'route-remove': if (d.route) state.routes.delete(d.route.id); topoChanged = true; break;
    case 'resync': return; // the server ends the stream; the reader resumes
    default: return; // path-change and anything newer: routes follow
  }
  if (topoChanged) refresh.layout();
  refresh.health();
  schedule('all');
}

// throttled refetches: at most one in flight and one per second each.
function throttled(fn, gap = 1000) {
  let running = false, again = false, last = 0;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    const wait = last + gap - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    last = Date.now();
    try { await fn(); } catch (e) { console.warn(e); }
    running = false;
    if (again) { again = false; run(); }
  };
  return run;
}

const refresh = {
  layout: throttled(async () => { state.layout = await getJSON(state.base + '/layout'); schedule('all'); }),
  health: throttled(async () => {
    const rows = await getJSON(state.base + '/edges/health');
    state.healthRows = rows || [];
    state.healthLoaded = true;
    state.health = new Map(state.healthRows.map((r) => [r.src + '>' + r.dst, r]));
    schedule('all');
  }),
};

// --- rendering --------------------------------------------------------------

// schedule coalesces redraws: one per animation frame at most, and at most
// every 250 ms while events stream, so a busy aggregator (thousands of
// route updates a second) costs a few redraws a second, not one per event.
let pending = null, lastRender = 0;
function schedule(what) {
  if (pending) { if (what === 'all') pending = 'all'; return; }
  pending = what;
  const wait = Math.max(0, lastRender + 250 - performance.now());
  setTimeout(() => requestAnimationFrame(() => {
    const w = pending;
    pending = null;
    lastRender = performance.now();
    render(w);
  }), wait);
}

// render paints what it has: the topology and table as soon as the layout
// (which carries the links) and the health rows are in, the heatmap and
// drill-down once the stream's snapshot brought the routes. So the fabric
// shows before a large route snapshot has arrived.
function render(what) {
  if (!state.layout || !state.healthLoaded) return;
  const hosts = state.layout.nodes.filter((n) => n.tier === 0);
  if (what === 'all') {
    $('topo-empty').hidden = state.layout.nodes.length > 0;
    topo.render(state.layout, state.layout.edges || [], state.health);
    table.setRows(state.healthRows);
    const bad = state.healthRows.filter((r) => r.verdict && r.verdict !== 'ok').length;
    $('summary').textContent = `${hosts.length} hosts · ${(state.layout.edges || []).length} links · ${state.routes.size} routes` + (bad ? ` · ${bad} links not ok` : '');
    if (!state.firstPaint && state.layout.nodes.length) {
      state.firstPaint = true;
      performance.mark('dnms-first-paint');
      document.body.dataset.ready = '1';
    }
  }
  if (!state.gotSnapshot) return;
  const metric = $('heat-metric').value;
  heat.setData(hosts.map((h) => h.id), hosts.map((h) => h.rack || ''), pairMatrix(hosts.map((h) => h.id), [...state.routes.values()], metric), metric);
  $('heat-scale').innerHTML = heat.scaleHTML();
  racks(hosts);
  heat.paintScale($('scale-bar'));
  drill();
  if (!state.routesPainted && hosts.length) {
    state.routesPainted = true;
    performance.mark('dnms-routes-paint');
    document.body.dataset.routes = '1';
  }
}

// racks lists the heatmap's row (and column) order: racks top to bottom,
// their hosts in order. Rebuilt only when the host order changes.
let rackKey = '';
function racks(hosts) {
  const key = hosts.map((h) => h.id + '@' + (h.rack || '')).join(',');
  if (key === rackKey) return;
  rackKey = key;
  const groups = [];
  for (const h of hosts) {
    const r = h.rack || 'no known first hop';
    if (!groups.length || groups[groups.length - 1].rack !== r) groups.push({ rack: r, hosts: [] });
    groups[groups.length - 1].hosts.push(h.id);
  }
  $('heat-racks').innerHTML = '<b>rows and columns, top to bottom</b><ol>' + groups.map((g) =>
    `<li>rack ${esc(g.rack)}: ${g.hosts.length > 6 ? esc(g.hosts[0]) + ' … ' + esc(g.hosts[g.hosts.length - 1]) + ` (${g.hosts.length} hosts)` : g.hosts.map(esc).join(', ')}</li>`).join('') + '</ol>';
}

// --- selection --------------------------------------------------------------

function select(sel) {
  state.selection = sel;
  $('clear-selection').disabled = !sel;
  table.select(sel && sel.kind === 'link' ? sel : null);
  drill();
}

function drill() {
  const sel = state.selection, out = $('pair-routes');
  if (!sel) {
    topo.highlight(null);
    $('pair-title').textContent = '— click a heatmap cell or a link';
    out.replaceChildren();
    return;
  }
  let routes, title;
  if (sel.kind === 'pair') {
    routes = [...state.routes.values()].filter((r) => (r.src === sel.src && r.dst === sel.dst) || (r.src === sel.dst && r.dst === sel.src));
    routes.sort((x, y) => (x.src === sel.src ? 0 : 1) - (y.src === sel.src ? 0 : 1));
    title = `${sel.src} ↔ ${sel.dst}`;
  } else {
    const k = pairKey(sel.a, sel.b);
    routes = [...state.routes.values()].filter((r) => r.hops.some((h, i) => i > 0 && pairKey(r.hops[i - 1], h) === k));
    title = `through ${sel.a} – ${sel.b}`;
  }
  $('pair-title').textContent = `— ${title} (${routes.length})`;
  topo.highlight(routes.map((r) => r.hops), sel.kind === 'link' ? sel : null);
  renderRoutes(out, title, routes, state.health);
}

// --- targets ----------------------------------------------------------------

async function targets() {
  const t = await getJSON('/v1/targets', { allow404: true }).catch(() => null);
  if (t === null) { $('targets-section').hidden = true; return; }
  const p = await getJSON('/v1/paths', { allow404: true }).catch(() => null);
  $('targets-section').hidden = false;
  renderTable($('targets'), t);
  if (p === null) $('paths').innerHTML = '<p class="muted">no path history on this server</p>';
  else renderTable($('paths'), p);
  setTimeout(targets, 5000);
}

// Hooks for the browser tests and the benchmark.
window.dnmsUI = {
  state,
  heatCell: (src, dst) => heat.cell(src, dst),
  linkVerdict: (src, dst) => {
    const l = document.querySelector(`line.half[data-src="${CSS.escape(src)}"][data-dst="${CSS.escape(dst)}"]`);
    return l ? l.getAttribute('data-verdict') : null;
  },
  // benchHeatmap draws an n×n random matrix `runs` times with the page's
  // renderer and `naiveRuns` times with one fillRect per cell (the
  // baseline), and returns the times in ms.
  benchHeatmap: (n, runs, naiveRuns) => {
    const hosts = Array.from({ length: n }, (_, i) => `198.18.${i >> 8}.${i & 255}`);
    const racks = hosts.map((_, i) => String(Math.floor(i / 40)));
    const v = new Float32Array(n * n);
    for (let c = 0; c < v.length; c++) v[c] = Math.random() < 0.01 ? Math.random() * 0.1 : 0;
    const fast = [], naive = [];
    heat.setData(hosts, racks, v, 'loss');
    for (let i = 0; i < runs; i++) { v[i] = Math.random(); fast.push(heat.draw(true)); }
    for (let i = 0; i < naiveRuns; i++) naive.push(heat.naiveDraw());
    return { fast, naive };
  },
};

main();
