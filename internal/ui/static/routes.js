// routes.js — the drill-down: a host pair's routes (both directions) or the
// routes through a link, each with its hops, the verdict of the link into
// each hop, per-hop RTT when the server reports it, and the route metrics.

import { verdictOf, verdictClass, glyph, pct, ms, esc, shortId } from './format.js';

const MAX = 60;

export function renderRoutes(container, title, routes, health) {
  if (!routes.length) {
    container.innerHTML = `<p class="muted">no routes for ${esc(title)}</p>`;
    return;
  }
  const shown = routes.slice(0, MAX);
  container.innerHTML = shown.map((r) => routeHTML(r, health)).join('') +
    (routes.length > MAX ? `<p class="muted">${routes.length - MAX} more routes not shown</p>` : '');
}

function routeHTML(r, health) {
  const m = r.metrics || {};
  const rtts = Array.isArray(r.hopRttSeconds) ? r.hopRttSeconds : null;
  const ports = (r.keys || []).map((k) => k.srcPort).filter((p) => p !== undefined);
  const hops = r.hops.map((h, i) => {
    const row = i > 0 ? health.get(r.hops[i - 1] + '>' + h) : null;
    const v = i > 0 ? verdictClass(verdictOf(row)) : '';
    const rtt = rtts && typeof rtts[i] === 'number' && rtts[i] > 0 ? `<span class="rtt">${ms(rtts[i])}</span>` : '';
    const inLink = i > 0 && row ? `<span class="in">${glyph(v)}${row.estimatedLoss > 0 ? ' ' + pct(row.estimatedLoss) : ''}</span> ` : '';
    const name = h.startsWith('*') ? '* (silent)' : h;
    return `<li${v ? ` data-verdict="${v}"` : ''} title="${esc(h)}">${inLink}${esc(shortId(name))} ${rtt}</li>`;
  }).join('');
  return `<div class="route" data-route="${esc(r.id)}">
<h4>${esc(r.src)} → ${esc(r.dst)} <span class="muted">route ${esc(r.id)}${r.origin ? ' from ' + esc(r.origin) : ''}${ports.length ? ', source ports ' + esc(ports.slice(0, 8).join(' ')) + (ports.length > 8 ? ' …' : '') : ''}</span></h4>
<ol>${hops}</ol>
<div class="metrics">${m.samples ?? 0} samples · loss ${pct(m.loss)} (forward ${pct(m.lossForward)}, reverse ${pct(m.lossReverse)}) · RTT p50 ${ms(m.rttP50Seconds)} p99 ${ms(m.rttP99Seconds)} max ${ms(m.rttMaxSeconds)} · jitter ${ms(m.jitterRfc3550Seconds)}${m.source ? ' · ' + esc(m.source) + ' stamps' : ''}${rtts ? '' : ' · per-hop RTT not reported by this server'}</div>
</div>`;
}
