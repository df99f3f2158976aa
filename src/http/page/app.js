// pika-remedy status page. Plain JS, no dependencies, embedded in the binary.
// Data only from the JSON API; the DOM is built with textContent (never HTML from data).
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const EVENTS = 30;
  const app = document.getElementById('app');
  const refresh = document.getElementById('refresh');
  let errors = 0;

  // Uncaught errors are counted on the page (tests read data-js-errors) and shown.
  function scriptError(message) {
    errors += 1;
    app.setAttribute('data-js-errors', String(errors));
    setRefresh('error', 'script error: ' + (message || 'unknown'));
  }
  window.addEventListener('error', function (e) { scriptError(e.message); });
  window.addEventListener('unhandledrejection', function (e) { scriptError(e.reason && e.reason.message); });

  // An HTTP or network failure (shown, retried at the next tick), not a bug in this script.
  function httpError(message) {
    const e = new Error(message);
    e.http = true;
    return e;
  }

  // `location.origin` never carries user:password, so fetch() works after a login by URL.
  function url(path) {
    return window.location.origin + path;
  }

  function getJson(path) {
    return fetch(url(path), { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .catch(function (e) { throw httpError(path + ': ' + e.message); })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            throw httpError(path + ': HTTP ' + r.status + (body && body.error ? ' — ' + body.error : ''));
          }
          return body;
        });
      });
  }

  function postJson(path) {
    return fetch(url(path), { method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            throw httpError('HTTP ' + r.status + (body && body.error ? ': ' + body.error : ''));
          }
          return body;
        });
      });
  }

  // el('div', {class: 'x', text: 'y', title: 'z', 'data-a': 'b', href: '/'}, child, ...)
  function el(tag, attrs) {
    const n = document.createElement(tag);
    const a = attrs || {};
    Object.keys(a).forEach(function (k) {
      const v = a[k];
      if (v === undefined || v === null || v === false) return;
      if (k === 'text') n.textContent = String(v);
      else if (k === 'class') n.className = v;
      else n.setAttribute(k, String(v));
    });
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === undefined || c === null || c === false) continue;
      if (Array.isArray(c)) c.forEach(function (x) { if (x) n.appendChild(x); });
      else if (typeof c === 'string') n.appendChild(document.createTextNode(c));
      else n.appendChild(c);
    }
    return n;
  }

  // replaceChildren() would turn null into the text "null".
  function show() {
    const kids = [];
    for (let i = 0; i < arguments.length; i++) if (arguments[i]) kids.push(arguments[i]);
    app.replaceChildren.apply(app, kids);
  }

  function setRefresh(state, text) {
    refresh.setAttribute('data-state', state);
    refresh.textContent = text;
  }

  function fmtTime(unix) {
    if (!unix) return '—';
    return new Date(unix * 1000).toISOString().replace('.000Z', 'Z');
  }

  function ago(unix) {
    if (!unix) return '';
    const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
    if (s < 90) return s + ' s ago';
    if (s < 5400) return Math.round(s / 60) + ' min ago';
    if (s < 129600) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }

  function bytes(n) {
    if (n === null || n === undefined) return 'unknown';
    return n + ' B';
  }

  function badge(kind, text, title) {
    return el('span', { class: 'badge b-' + kind, title: title, text: text });
  }

  // What a cluster looks like at a glance, from our state and the plan of now.
  function health(c, pv) {
    if (c.running) return { kind: 'acting', text: 'acting', why: 'a reconcile is running now' };
    if (c.effectively_paused) return { kind: 'paused', text: 'paused', why: 'no automatic action' };
    if (!pv || !pv.plan) return { kind: 'unknown', text: 'not observed yet', why: 'no observation yet' };
    const kind = pv.plan.action.kind;
    if (kind === 'no_action') return { kind: 'ok', text: 'converged', why: pv.plan.reason };
    if (kind === 'refuse') return { kind: 'refusing', text: 'refusing', why: pv.plan.reason };
    return { kind: 'pending', text: 'needs ' + kind.replace('_', ' '), why: pv.plan.reason };
  }

  function lockText(c) {
    if (c.running) return 'held by this instance (reconcile running)';
    const o = c.last_outcome;
    if (o && o.result && o.result.kind === 'lock_held') return 'held by ' + o.result.holder + ' (last attempt)';
    return 'free (as far as this instance knows)';
  }

  // Which instance polls the cluster (scale-out), as the answering instance sees it.
  function ownerText(c) {
    const o = c.owner;
    if (!o) return 'unknown';
    if (!o.scale_out) return 'this instance (scale-out off: every instance polls every cluster)';
    if (!o.instance) return 'nobody (no live member)';
    if (o.this_instance) return o.instance + ' (this instance)';
    return o.instance + ' (another instance: not polled here, its observation is there)';
  }

  function membersText(m) {
    if (!m || !m.scale_out) return null;
    return 'scale-out members: ' + m.members.map(function (x) {
      return x.instance + (x.this_instance ? ' (this instance)' : '') + ': ' + x.clusters;
    }).join(', ');
  }

  function cooldownText(pv) {
    if (!pv || !pv.cooldown_until) return 'none';
    const left = Math.max(0, pv.cooldown_until - Math.round(Date.now() / 1000));
    return 'until ' + fmtTime(pv.cooldown_until) + ' (' + left + ' s left): no automatic failover';
  }

  function nodeStatus(n) {
    if (n.status && Object.prototype.hasOwnProperty.call(n.status, 'ok')) return { ok: n.status.ok };
    return { err: n.status ? n.status.error : 'unknown' };
  }

  // ---------------------------------------------------------------- overview

  function renderOverview(list, plans) {
    const rows = list.clusters.map(function (c, i) {
      const pv = plans[i];
      const h = health(c, pv);
      const rec = c.record;
      const obs = c.observation;
      const reachable = obs ? obs.nodes.filter(function (n) { return nodeStatus(n).ok; }).length : 0;
      const total = obs ? obs.nodes.length : 0;
      const rogue = pv && pv.nodes ? pv.nodes.filter(function (n) { return n.claims_master_against_record; }) : [];
      return el('a', { class: 'card cluster-card h-' + h.kind, href: '/clusters/' + encodeURIComponent(c.name), 'data-cluster': c.name, 'data-health': h.kind, 'data-owner': c.owner && c.owner.instance ? c.owner.instance : '' },
        el('div', { class: 'card-head' }, el('strong', { text: c.name }), badge(h.kind, h.text, h.why)),
        el('div', { class: 'kv' },
          el('span', { text: 'master' }), el('span', { class: 'mono', text: rec ? rec.master + ' (epoch ' + rec.epoch + ')' : 'no record' }),
          el('span', { text: 'nodes' }), el('span', { text: obs ? reachable + ' of ' + total + ' answering' : 'not observed yet' }),
          el('span', { text: 'paused' }), el('span', { text: c.effectively_paused ? (c.paused ? 'yes (this cluster)' : 'yes (globally)') : 'no' }),
          el('span', { text: 'lock' }), el('span', { text: lockText(c) }),
          el('span', { text: 'polled by' }), el('span', { class: 'owner', text: ownerText(c) }),
          el('span', { text: 'now' }), el('span', { text: h.why })),
        rogue.length ? el('div', { class: 'alarm', text: rogue.map(function (n) { return n.addr + ' ' + n.disagrees; }).join('; ') }) : null);
    });
    const top = el('div', { class: 'summary' },
      list.paused ? badge('paused', 'globally paused') : null,
      list.dry_run ? badge('refusing', 'dry run: nothing is sent') : null,
      membersText(list.scale_out) ? el('span', { class: 'small muted members', text: membersText(list.scale_out) }) : null);
    show(
      el('h1', { text: 'Clusters' }), top,
      el('div', { class: 'grid' }, rows.length ? rows : el('p', { text: 'no clusters configured' })));
    app.setAttribute('data-view', 'overview');
  }

  function loadOverview() {
    return getJson('/v1/clusters').then(function (list) {
      return Promise.all(list.clusters.map(function (c) {
        return getJson('/v1/clusters/' + encodeURIComponent(c.name) + '/plan').catch(function () { return null; });
      })).then(function (plans) { renderOverview(list, plans); });
    });
  }

  // ---------------------------------------------------------------- one cluster

  function nodeCard(n, ctx) {
    const st = nodeStatus(n);
    const view = ctx.views[n.addr] || {};
    const rec = ctx.record;
    const isRecorded = rec && rec.master === n.addr;
    const cls = ['node'];
    if (isRecorded) cls.push('recorded');
    if (st.err) cls.push('down');
    if (view.claims_master_against_record) cls.push('rogue');
    else if (view.disagrees) cls.push('disagree');
    const tags = [];
    if (isRecorded) tags.push(badge('ok', 'recorded master'));
    if (st.ok) tags.push(badge(st.ok.role === 'master' ? 'master' : 'replica', st.ok.role));
    if (view.claims_master_against_record) tags.push(badge('alarm', 'CLAIMS MASTER AGAINST THE RECORD'));
    const lines = [];
    if (st.err) {
      lines.push(el('div', { class: 'line bad', text: 'unreachable: ' + st.err }));
    } else {
      const s = st.ok;
      lines.push(el('div', { class: 'line muted', text: s.engine + (s.version ? ' ' + s.version : '') + (s.offset !== null && s.offset !== undefined ? ' · offset ' + s.offset : '') }));
      if (s.role !== 'master') {
        const link = s.link || 'unknown';
        lines.push(el('div', { class: 'line' }, 'link ', badge(link === 'up' ? 'ok' : 'bad', link), ' to ', el('span', { class: 'mono', text: s.master || 'no master' })));
        lines.push(el('div', { class: 'line', 'data-lag': view.lag_bytes === null || view.lag_bytes === undefined ? '' : view.lag_bytes, text: 'lag ' + bytes(view.lag_bytes) }));
        const dbs = perDb(n.addr, s, ctx.obs);
        if (dbs) lines.push(dbs);
      } else {
        lines.push(el('div', { class: 'line', text: s.connected_replicas + ' connected replica(s)' }));
      }
    }
    if (view.disagrees) lines.push(el('div', { class: 'line alarm', text: view.disagrees }));
    if (!isRecorded) {
      if (view.rank) {
        lines.push(el('div', { class: 'line good', text: view.rank === 1 ? 'would be promoted first (rank 1)' : 'promotion rank ' + view.rank }));
      } else if (view.excluded) {
        lines.push(el('div', { class: 'line muted', text: 'not promotable: ' + view.excluded }));
      }
    }
    return el('div', { class: cls.join(' '), 'data-addr': n.addr, 'data-role': st.ok ? st.ok.role : 'unreachable', 'data-rogue': view.claims_master_against_record ? 'true' : 'false' },
      el('div', { class: 'node-head' }, el('span', { class: 'mono addr', text: n.addr }), tags),
      lines);
  }

  // Pika: link state and lag per DB (from the master's replica line for this node).
  function perDb(addr, s, obs) {
    const dbs = Object.keys(s.db_links || {});
    if (!dbs.length) return null;
    let lagByDb = {};
    const m = s.master && obs.nodes.find(function (x) { return x.addr === s.master; });
    const ms = m && nodeStatus(m).ok;
    if (ms) {
      const line = ms.replicas.find(function (r) { return (r.ip + ':' + r.port) === addr || ('[' + r.ip + ']:' + r.port) === addr; });
      if (line) lagByDb = line.db_lag || {};
    }
    const rows = dbs.map(function (db) {
      const lag = Object.prototype.hasOwnProperty.call(lagByDb, db) ? lagByDb[db] : undefined;
      return el('tr', {}, el('td', { class: 'mono', text: db }), el('td', {}, badge(s.db_links[db] === 'up' ? 'ok' : 'bad', s.db_links[db])),
        el('td', { text: lag === undefined ? '—' : bytes(lag) }));
    });
    return el('table', { class: 'dbs' }, el('thead', {}, el('tr', {}, el('th', { text: 'DB' }), el('th', { text: 'link' }), el('th', { text: 'lag' }))), el('tbody', {}, rows));
  }

  function topology(ctx) {
    const obs = ctx.obs;
    if (!obs) return el('p', { class: 'muted', text: 'not observed yet' });
    const addrs = obs.nodes.map(function (n) { return n.addr; });
    const parent = {};
    obs.nodes.forEach(function (n) {
      const s = nodeStatus(n).ok;
      if (s && s.role !== 'master' && s.master && addrs.indexOf(s.master) >= 0 && s.master !== n.addr) parent[n.addr] = s.master;
    });
    const rec = ctx.record;
    const roots = obs.nodes.filter(function (n) { return !parent[n.addr]; });
    roots.sort(function (a, b) {
      const score = function (n) {
        if (rec && n.addr === rec.master) return 0;
        const s = nodeStatus(n).ok;
        if (s && s.role === 'master') return 1;
        return s ? 2 : 3;
      };
      return score(a) - score(b);
    });
    const seen = {};
    function subtree(n, depth) {
      seen[n.addr] = true;
      const kids = obs.nodes.filter(function (k) { return parent[k.addr] === n.addr && !seen[k.addr]; });
      return el('li', {}, nodeCard(n, ctx),
        kids.length && depth < 8 ? el('ul', {}, kids.map(function (k) { return subtree(k, depth + 1); })) : null);
    }
    const trees = roots.map(function (r) { return subtree(r, 0); });
    // Nodes only reachable through a cycle of "follows" (should not happen): list them flat.
    obs.nodes.forEach(function (n) { if (!seen[n.addr]) trees.push(el('li', {}, nodeCard(n, ctx))); });
    return el('ul', { class: 'tree' }, trees);
  }

  function planSection(pv) {
    if (!pv || !pv.plan) return el('p', { class: 'muted', text: 'no observation yet' });
    const p = pv.plan;
    const cands = pv.ranking.length ? el('table', { class: 'cands' },
      el('thead', {}, el('tr', {}, ['#', 'node', 'priority', 'offset', 'verdict'].map(function (h) { return el('th', { text: h }); }))),
      el('tbody', {}, (function () {
        let rank = 0;
        return pv.ranking.map(function (c) {
          const r = c.excluded ? '—' : String(++rank);
          return el('tr', { class: c.excluded ? 'excluded' : 'eligible' },
            el('td', { text: r }), el('td', { class: 'mono', text: c.addr }), el('td', { text: c.priority }),
            el('td', { text: c.offset === null || c.offset === undefined ? '—' : c.offset }),
            el('td', { text: c.excluded ? 'excluded: ' + c.excluded : 'eligible' }));
        });
      })())) : null;
    const steps = pv.steps.length ? el('ol', { class: 'steps' }, pv.steps.map(function (s) {
      return el('li', {}, el('div', { text: s.text }), el('pre', { class: 'cmds', text: s.commands.join('\n') }));
    })) : el('p', { class: 'muted', text: 'no commands would be sent' });
    return el('div', { class: 'plan', 'data-action': p.action.kind },
      el('p', {}, badge(p.action.kind === 'no_action' ? 'ok' : (p.action.kind === 'refuse' ? 'refusing' : 'pending'), p.action.kind.replace('_', ' ')), ' ', el('span', { class: 'reason', text: p.reason })),
      el('p', { class: 'muted small', text: 'As a periodic check would decide now: ' + pv.note + '.' }),
      cands ? el('h3', { text: pv.ranking_basis === 'plan' ? 'Candidates (best first)' : 'Promotion ranking if the master had to be replaced now (best first)' }) : null,
      cands,
      el('h3', { text: 'Exact commands' }), steps);
  }

  function sourceText(e) {
    switch (e.source) {
      case 'alertmanager': return 'Alertmanager';
      case 'periodic': return 'self (periodic check)';
      case 'api': return 'operator (API/page)';
      case 'cli': return 'operator (CLI)';
      default: return e.source;
    }
  }

  function eventItem(e) {
    const o = e.outcome;
    const result = o ? o.result.kind : e.kind;
    const head = el('div', { class: 'ev-head' },
      el('time', { class: 'mono', datetime: e.at, text: e.at }),
      badge(result === 'applied' ? 'ok' : (result === 'failed' ? 'bad' : 'neutral'), o ? (o.plan.action.kind + ' · ' + result) : e.kind),
      el('span', { class: 'muted', text: 'by ' + sourceText(e) + (e.trigger ? ' · ' + e.trigger.kind : '') + (e.count > 1 ? ' · ×' + e.count + ' until ' + e.last_at : '') }));
    const parts = [head, el('div', { class: 'ev-reason', text: e.reason })];
    if (e.alerts && e.alerts.length) {
      parts.push(el('div', { class: 'small muted', text: 'alerts: ' + e.alerts.map(function (a) { return a.alertname + ' ' + a.status + (a.node ? ' on ' + a.node : ''); }).join(', ') + (e.alerts_omitted ? ' (+' + e.alerts_omitted + ' more)' : '') }));
    }
    if (o && o.steps && o.steps.length) {
      parts.push(el('ol', { class: 'ev-steps' }, o.steps.map(function (s) {
        const what = s.step.step.replace(/_/g, ' ') + (s.step.node ? ' ' + s.step.node : '') + (s.step.master && s.step.step !== 'record' ? ' → ' + s.step.master : '') + (s.step.step === 'record' ? ' ' + s.step.master : '');
        return el('li', { class: s.ok ? 'ok' : 'bad' }, el('span', { text: (s.ok ? '✓ ' : '✗ ') + what }), el('span', { class: 'muted', text: ' ' + s.millis + ' ms' }), s.detail ? el('span', { class: 'small', text: ' — ' + s.detail }) : null);
      })));
      parts.push(el('div', { class: 'small muted', text: 'total ' + o.millis + ' ms' }));
    }
    if (o && o.result && o.result.error) parts.push(el('div', { class: 'alarm', text: o.result.error }));
    ['snapshots', 'notifications'].forEach(function (k) {
      if (e[k] && e[k].length) parts.push(el('div', { class: 'small', text: k + ': ' + e[k].map(function (x) { return typeof x === 'string' ? x : JSON.stringify(x); }).join('; ') }));
    });
    return el('li', { class: 'event', 'data-seq': e.seq, 'data-action': o ? o.plan.action.kind : e.kind, 'data-result': result }, parts);
  }

  function pauseButton(c) {
    const paused = c.paused;
    const b = el('button', { type: 'button', class: 'action', 'data-act': paused ? 'resume' : 'pause',
      text: paused ? 'Resume automatic action' : 'Pause automatic action' });
    b.addEventListener('click', function () {
      const verb = paused ? 'resume' : 'pause';
      const q = paused
        ? 'Resume automatic action on cluster ' + c.name + '? Alerts and periodic checks will act again.'
        : 'Pause automatic action on cluster ' + c.name + '? No failover or demotion will run until resumed (operator commands still do).';
      if (!window.confirm(q)) return;
      b.disabled = true;
      postJson('/v1/' + verb + '?cluster=' + encodeURIComponent(c.name))
        .then(function () { setRefresh('ok', verb + 'd ' + c.name + ' (recorded in the audit trail)'); })
        .catch(function (e) { window.alert(verb + ' failed: ' + e.message); })
        .then(function () { b.disabled = false; tick(); });
    });
    return b;
  }

  function renderCluster(c, pv, events) {
    const views = {};
    (pv.nodes || []).forEach(function (n) { views[n.addr] = n; });
    const ctx = { obs: c.observation, record: c.record, views: views };
    const h = health(c, pv);
    const rec = c.record;
    const rogue = (pv.nodes || []).filter(function (n) { return n.claims_master_against_record; });
    const facts = el('div', { class: 'kv facts' },
      el('span', { text: 'record' }), el('span', { class: 'mono', text: rec ? rec.master + ' · epoch ' + rec.epoch : 'no record yet' }),
      el('span', { text: 'since' }), el('span', { text: rec ? fmtTime(rec.updated_at) + ' (' + ago(rec.updated_at) + ')' : '—' }),
      el('span', { text: 'recorded because' }), el('span', { text: rec ? rec.reason : '—' }),
      rec && rec.pending ? el('span', { text: 'intent' }) : null, rec && rec.pending ? el('span', { class: 'alarm', text: 'failover to ' + rec.pending + ' in progress' }) : null,
      el('span', { text: 'paused' }), el('span', { text: c.effectively_paused ? (c.paused ? 'yes (this cluster)' : 'yes (globally)') : 'no' }),
      el('span', { text: 'cooldown' }), el('span', { text: cooldownText(pv) }),
      el('span', { text: 'lock' }), el('span', { text: lockText(c) + (c.queued ? ' · ' + c.queued + ' queued' : '') }),
      el('span', { text: 'polled by' }), el('span', { class: 'owner', text: ownerText(c) }),
      c.error ? el('span', { text: 'coordinator' }) : null, c.error ? el('span', { class: 'alarm', text: c.error }) : null);
    show(
      el('p', { class: 'crumbs' }, el('a', { href: '/', text: '← all clusters' })),
      el('div', { class: 'title' }, el('h1', { text: c.name }), badge(h.kind, h.text, h.why), pauseButton(c)),
      rogue.length ? el('div', { class: 'alarm big', 'data-rogue-count': rogue.length, text: 'Split brain: ' + rogue.map(function (n) { return n.addr + ' ' + n.disagrees; }).join('; ') }) : null,
      facts,
      el('section', {}, el('h2', { text: 'Topology' }), el('div', { id: 'topology' }, topology(ctx))),
      el('section', {}, el('h2', { text: 'Plan now' }), el('div', { id: 'plan' }, planSection(pv))),
      el('section', {}, el('h2', { text: 'Timeline' }), events.length
        ? el('ol', { id: 'timeline', class: 'timeline' }, events.slice().reverse().map(eventItem))
        : el('p', { id: 'timeline', class: 'muted', text: 'no events yet' })));
    app.setAttribute('data-view', 'cluster');
    app.setAttribute('data-cluster', c.name);
    app.setAttribute('data-master', rec ? rec.master : '');
    app.setAttribute('data-epoch', rec ? rec.epoch : '');
  }

  function loadCluster(name) {
    const n = encodeURIComponent(name);
    return Promise.all([
      getJson('/v1/clusters/' + n),
      getJson('/v1/clusters/' + n + '/plan'),
      getJson('/v1/events?cluster=' + n + '&limit=' + EVENTS),
    ]).then(function (r) { renderCluster(r[0], r[1], r[2]); });
  }

  // ---------------------------------------------------------------- loop

  function load() {
    const m = window.location.pathname.match(/^\/clusters\/([^/]+)\/?$/);
    if (m) return loadCluster(decodeURIComponent(m[1]));
    return loadOverview();
  }

  let busy = false;
  function tick() {
    if (busy) return;
    busy = true;
    load().then(function () {
      setRefresh('ok', 'updated ' + new Date().toLocaleTimeString());
    }).catch(function (e) {
      if (e && e.http) setRefresh('error', 'refresh failed: ' + e.message);
      else scriptError(e && e.message);
    }).then(function () { busy = false; });
  }

  tick();
  window.setInterval(tick, REFRESH_MS);
})();
