// The GuildNet dashboard: the caller's workspaces with live status, a launch form, actions,
// logs, an events pane, the volumes kept after their workspace was deleted, the caller's
// usage against their Quotas' limits, and their databases: a paged row browser with
// insert, edit and delete, export and import, and a table's changes live. Plain ES module, no build step; everything talks to the proxy's
// JSON API on this origin (the session cookie is HttpOnly, so fetch just sends it).

const POLL_MS = 15000; // slow poll, a fallback for the event stream
const POLL_OFFLINE_MS = 5000; // while the event stream is down
const MAX_EVENTS = 200;
const MAX_LOG_LINES = 2000;

const $ = (id) => document.getElementById(id);

/** An error answered by the API: `{"error":{"reason","message"}}` with an HTTP status. */
class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

let leaving = false; // logging out: the login page is on its way, nothing else navigates

function toLogin() {
  if (leaving) return;
  leaving = true;
  const next = location.pathname + location.search + location.hash;
  location.assign('/login?next=' + encodeURIComponent(next));
}

async function api(path, { method = 'GET', body, text = false } = {}) {
  const headers = { Accept: text ? 'text/plain' : 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'NetworkError', 'The proxy cannot be reached: ' + e.message);
  }
  if (res.status === 401) {
    toLogin();
    throw new ApiError(401, 'Unauthorized', 'Your session has ended; log in again.');
  }
  if (!res.ok) {
    let reason = res.statusText || 'Error';
    let message = `${res.status} ${res.statusText}`.trim();
    try {
      const data = await res.json();
      if (data && data.error) {
        reason = data.error.reason || reason;
        message = data.error.message || message;
      }
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(res.status, reason, message);
  }
  if (text) return res.text();
  if (res.status === 204) return {};
  return res.json();
}

const seg = encodeURIComponent;
const wsPath = (w) => `/api/workspaces/${seg(w.namespace)}/${seg(w.name)}`;
const key = (w) => `${w.namespace}/${w.name}`;

// ---- status line -------------------------------------------------------------------------

let statusTimer;
function say(message, kind = 'info') {
  const el = $('status');
  el.textContent = message;
  el.dataset.kind = kind;
  clearTimeout(statusTimer);
  if (kind !== 'error') statusTimer = setTimeout(() => { el.textContent = ''; }, 8000);
}

// ---- formatting --------------------------------------------------------------------------

function ago(iso) {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'onclick') node.addEventListener('click', v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** What a workspace is doing, in words, and a short state for styling. */
function describe(w) {
  const phase = w.phase || 'Pending';
  const failed = (w.conditions || []).find((c) => c.type === 'Failed' && c.status === 'True');
  const ready = (w.conditions || []).find((c) => c.type === 'Ready');
  let detail = '';
  if (failed) detail = failed.message || failed.reason || '';
  else if (!w.ready && ready && ready.status !== 'True') detail = ready.message || ready.reason || '';
  let state = phase.toLowerCase();
  if (phase === 'Running' && !w.ready) state = 'starting';
  return { phase, detail, state };
}

// ---- workspaces --------------------------------------------------------------------------

const workspaces = new Map(); // key → W
const busy = new Set(); // keys with an action in flight
let listLoaded = false;
let listGen = 0; // bumped by every change, so a list answer older than a change is not applied

function upsert(w) {
  listGen += 1;
  workspaces.set(key(w), w);
  render();
}

/** Reloads the workspaces, and the retained volumes and quotas with them (a workspace's change is often theirs). */
async function refresh() {
  if (leaving) return;
  const gen = ++listGen;
  const claimsLoad = refreshClaims();
  const quotasLoad = refreshQuotas();
  try {
    const data = await api('/api/workspaces');
    if (gen !== listGen) {
      refreshSoon();
      return;
    }
    workspaces.clear();
    for (const w of data.items || []) workspaces.set(key(w), w);
    listLoaded = true;
    document.body.dataset.listLoaded = 'true';
    $('list-error').textContent = '';
    render();
  } catch (e) {
    if (e.status !== 401) $('list-error').textContent = 'Could not load workspaces: ' + e.message;
  }
  await Promise.all([claimsLoad, quotasLoad]);
}

let refreshTimer;
/** Coalesces bursts of events into one list request. */
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

/** Runs `action` for `w` (a workspace, or a claim with its own `k`), its buttons disabled meanwhile. */
async function act(w, verb, action, done, k = key(w)) {
  busy.add(k);
  render();
  renderClaims();
  try {
    const result = await action();
    done(result);
    say(`${w.name}: ${verb}.`);
  } catch (e) {
    say(`${w.name}: ${e.message}`, 'error');
  } finally {
    busy.delete(k);
    render();
    renderClaims();
  }
}

function suspend(w, yes) {
  const verb = yes ? 'suspend requested' : 'resume requested';
  act(w, verb, () => api(`${wsPath(w)}/${yes ? 'suspend' : 'resume'}`, { method: 'POST' }), upsert);
}

function remove(w) {
  if (!window.confirm(`Delete workspace ${w.namespace}/${w.name}? Its persistent volumes are kept (under Retained volumes) unless their reclaim policy says otherwise.`)) return;
  act(w, 'deleted', () => api(wsPath(w), { method: 'DELETE' }), () => {
    // Gone from the list at once; a later refresh shows it again if it still exists.
    listGen += 1;
    workspaces.delete(key(w));
    if (inlineKey === key(w)) closeInline();
    if (logsKey === key(w)) closeLogs();
    refreshSoon();
    refreshClaimsSoon();
  });
}

function row(w) {
  const k = key(w);
  const { phase, detail, state } = describe(w);
  const n = w.name;
  const inFlight = busy.has(k);
  const statusCell = el('td', { class: 'state' },
    el('span', {
      class: `badge ${inFlight ? 'busy' : state}`,
      'data-testid': `ws-phase-${n}`,
      dataset: { ready: String(!!w.ready), suspended: String(!!w.suspended) },
      text: phase,
    }),
    ' ',
    el('span', {
      class: w.ready ? 'ready yes' : 'ready no',
      'data-testid': `ws-ready-${n}`,
      text: w.ready ? 'ready' : 'not ready',
    }),
    detail ? el('div', { class: 'detail', text: detail }) : null,
  );
  const open = el('a', {
    class: 'button',
    href: w.url,
    target: '_blank',
    rel: 'noopener',
    'data-testid': `ws-open-${n}`,
    'aria-label': `Open ${n} in a new tab`,
    text: 'Open',
  });
  const inline = el('button', {
    type: 'button',
    'data-testid': `ws-inline-${n}`,
    'aria-label': `Open ${n} inline`,
    onclick: () => openInline(w),
    text: 'Inline',
  });
  const toggle = w.suspended
    ? el('button', {
      type: 'button',
      'data-testid': `ws-resume-${n}`,
      'aria-label': `Resume ${n}`,
      disabled: inFlight,
      onclick: () => suspend(w, false),
      text: 'Resume',
    })
    : el('button', {
      type: 'button',
      'data-testid': `ws-suspend-${n}`,
      'aria-label': `Suspend ${n}`,
      disabled: inFlight,
      onclick: () => suspend(w, true),
      text: 'Suspend',
    });
  const logs = el('button', {
    type: 'button',
    'data-testid': `ws-logs-${n}`,
    'aria-label': `Logs of ${n}`,
    onclick: () => openLogs(w),
    text: 'Logs',
  });
  const del = el('button', {
    type: 'button',
    class: 'danger',
    'data-testid': `ws-delete-${n}`,
    'aria-label': `Delete ${n}`,
    disabled: inFlight,
    onclick: () => remove(w),
    text: 'Delete',
  });
  const owner = w.ownerName || w.owner;
  return el('tr', { 'data-testid': `ws-row-${n}`, dataset: { namespace: w.namespace, name: n, phase } },
    el('th', { scope: 'row' },
      el('span', { class: 'name', text: n }),
      el('div', { class: 'muted small', text: w.namespace + (owner ? ` · ${owner}` : '') })),
    statusCell,
    el('td', { class: 'image', text: w.image || '' }),
    el('td', { title: w.lastAccessTime || '', text: ago(w.lastAccessTime) }),
    el('td', { class: 'actions' }, open, inline, toggle, logs, del),
  );
}

function render() {
  const items = [...workspaces.values()].sort(
    (a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  // Keep focus on the same control across a re-render, for keyboard users.
  const focused = document.activeElement?.dataset?.testid;
  $('ws-body').replaceChildren(...items.map(row));
  if (focused) document.querySelector(`[data-testid="${CSS.escape(focused)}"]`)?.focus();
  $('ws-empty').hidden = !listLoaded || items.length > 0;
  if (inlineKey && !workspaces.has(inlineKey) && listLoaded) closeInline();
}

// ---- retained volume claims --------------------------------------------------------------

const claims = new Map(); // key → C
const claimPath = (c) => `/api/claims/${seg(c.namespace)}/${seg(c.name)}`;
const claimKey = (c) => `claim:${key(c)}`; // apart from a workspace of the same name
let claimsLoaded = false;

async function refreshClaims() {
  if (leaving) return;
  try {
    const data = await api('/api/claims');
    claims.clear();
    for (const c of data.items || []) claims.set(key(c), c);
    claimsLoaded = true;
    $('claims-error').textContent = '';
    renderClaims();
  } catch (e) {
    if (e.status !== 401) $('claims-error').textContent = 'Could not load retained volumes: ' + e.message;
  }
}

let claimsTimer;
/** A deleted workspace's claims are retained a moment later: look again shortly. */
function refreshClaimsSoon() {
  clearTimeout(claimsTimer);
  claimsTimer = setTimeout(refreshClaims, 1000);
}

function removeClaim(c) {
  if (!window.confirm(`Delete volume ${c.namespace}/${c.name} and all the data on it? This cannot be undone.`)) return;
  act(c, 'volume deleted', () => api(claimPath(c), { method: 'DELETE' }), () => {
    claims.delete(key(c));
    refreshClaimsSoon();
  }, claimKey(c));
}

function claimRow(c) {
  const n = c.name;
  const inFlight = busy.has(claimKey(c));
  const del = el('button', {
    type: 'button',
    class: 'danger',
    'data-testid': `claim-delete-${n}`,
    'aria-label': `Delete volume ${n}`,
    title: c.usedBy ? `Workspace ${c.usedBy} still uses it` : null,
    disabled: inFlight || !!c.usedBy,
    onclick: () => removeClaim(c),
    text: 'Delete',
  });
  const detail = c.usedBy ? `in use by ${c.usedBy}` : (c.workspace ? `from ${c.workspace}` : '');
  return el('tr', { 'data-testid': `claim-row-${n}`, dataset: { namespace: c.namespace, name: n } },
    el('th', { scope: 'row' },
      el('span', { class: 'name', text: n }),
      el('div', { class: 'muted small', text: c.namespace + (detail ? ` · ${detail}` : '') })),
    el('td', { text: c.size || '—' }),
    el('td', { title: c.creationTimestamp || '', text: ago(c.creationTimestamp) }),
    el('td', { class: 'actions' }, del),
  );
}

function renderClaims() {
  const items = [...claims.values()].sort(
    (a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  $('claims-body').replaceChildren(...items.map(claimRow));
  $('claims-table').hidden = items.length === 0;
  $('claims-empty').hidden = !claimsLoaded || items.length > 0;
}

// ---- quotas ------------------------------------------------------------------------------

let quotasLoaded = false;
let quotaItems = [];

async function refreshQuotas() {
  if (leaving) return;
  try {
    const data = await api('/api/quotas');
    quotaItems = data.items || [];
    quotasLoaded = true;
    document.body.dataset.quotasLoaded = 'true';
    $('quotas-error').textContent = '';
    renderQuotas();
  } catch (e) {
    if (e.status !== 401) $('quotas-error').textContent = 'Could not load your quotas: ' + e.message;
  }
}

/** One limit: `used / limit`, marked when nothing more fits (or the caller is over it). */
function dimensionItem(q, d) {
  const state = d.over ? 'over' : (d.full ? 'full' : 'within');
  const used = d.used ?? '?';
  const note = d.over ? 'over the limit' : (d.full ? 'at the limit' : '');
  return el('div', {
    class: `dim ${state}`,
    'data-testid': `quota-dim-${q.namespace}-${q.name}-${d.field}`,
    dataset: { field: d.field, used: d.used ?? '', limit: d.limit, state },
  },
  el('dt', { text: d.resource }),
  el('dd', {},
    el('span', { class: 'amount', text: `${used} / ${d.limit}` }),
    note ? el('span', { class: 'note', text: note }) : null));
}

function quotaItem(q) {
  const where = q.scope === 'Cluster' ? 'cluster-wide' : `namespace ${q.namespace}`;
  const unknown = q.usage === null || q.usage === undefined;
  return el('li', {
    class: 'quota',
    'data-testid': `quota-${q.namespace}-${q.name}`,
    dataset: { namespace: q.namespace, name: q.name },
  },
  el('div', { class: 'quota-head' },
    el('span', { class: 'name', text: `${q.namespace}/${q.name}` }),
    el('span', { class: 'muted small', text: ` · ${where}` })),
  unknown ? el('p', { class: 'help', text: 'Your usage is not known yet: it shows once the operator has counted it.' }) : null,
  q.dimensions.length
    ? el('dl', { class: 'dims' }, ...q.dimensions.map((d) => dimensionItem(q, d)))
    : el('p', { class: 'muted small', text: 'No limits set.' }));
}

function renderQuotas() {
  $('quotas-list').replaceChildren(...quotaItems.map(quotaItem));
  $('quotas-empty').hidden = !quotasLoaded || quotaItems.length > 0;
}

// ---- inline view -------------------------------------------------------------------------

let inlineKey = null;

function openInline(w) {
  inlineKey = key(w);
  $('inline-name').textContent = `${w.namespace}/${w.name}`;
  $('inline-tab').href = w.url;
  $('inline-frame').title = `Workspace ${w.namespace}/${w.name}`;
  $('inline-frame').src = w.url;
  $('inline').hidden = false;
  $('inline').scrollIntoView({ block: 'nearest' });
}

function closeInline() {
  inlineKey = null;
  $('inline-frame').src = 'about:blank';
  $('inline').hidden = true;
}

// ---- logs --------------------------------------------------------------------------------

let logsKey = null;
let logsTarget = null;
let logsStream = null;

function appendLog(line) {
  const pre = $('logs-text');
  const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(line + '\n');
  while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
  if (stick) pre.scrollTop = pre.scrollHeight;
}

function stopFollowing() {
  if (logsStream) logsStream.close();
  logsStream = null;
}

async function loadLogs() {
  const w = logsTarget;
  if (!w) return;
  stopFollowing();
  const pre = $('logs-text');
  const url = `${wsPath(w)}/logs?tail=100`;
  if ($('logs-follow').checked) {
    pre.textContent = '';
    $('logs-status').textContent = 'Following…';
    const es = new EventSource(url + '&follow=true');
    logsStream = es;
    es.addEventListener('log', (ev) => appendLog(ev.data));
    es.addEventListener('open', () => { $('logs-status').textContent = 'Following live.'; });
    es.addEventListener('error', () => {
      if (logsStream === es) $('logs-status').textContent = 'Log stream interrupted; reconnecting…';
    });
    return;
  }
  $('logs-status').textContent = 'Loading…';
  try {
    const text = await api(url, { text: true });
    if (logsTarget !== w) return;
    pre.textContent = text;
    pre.scrollTop = pre.scrollHeight;
    $('logs-status').textContent = text ? `Last 100 lines, loaded ${new Date().toLocaleTimeString()}.` : 'No log lines.';
  } catch (e) {
    if (logsTarget !== w) return;
    pre.textContent = '';
    $('logs-status').textContent = 'Could not load logs: ' + e.message;
  }
}

function openLogs(w) {
  logsKey = key(w);
  logsTarget = w;
  $('logs-name').textContent = `${w.namespace}/${w.name}`;
  $('logs').hidden = false;
  $('logs').scrollIntoView({ block: 'nearest' });
  loadLogs();
}

function closeLogs() {
  stopFollowing();
  logsKey = null;
  logsTarget = null;
  $('logs').hidden = true;
  $('logs-text').textContent = '';
}

// ---- launch ------------------------------------------------------------------------------

async function launch(ev) {
  ev.preventDefault();
  const form = ev.target;
  const err = $('launch-error');
  err.textContent = '';
  const v = (name) => form.elements[name].value.trim();
  const invalid = [...form.elements].find((e) => e.willValidate && !e.checkValidity());
  if (invalid) {
    const label = invalid.labels?.[0]?.textContent?.trim() || invalid.name;
    err.textContent = `${label}: ${invalid.validationMessage}`;
    invalid.focus();
    return;
  }
  const body = {
    namespace: v('namespace') || 'default',
    name: v('name'),
    image: v('image'),
    hint: v('hint') || null,
    idleTimeout: v('idleTimeout') || null,
    volumes: [],
  };
  const vol = { name: v('volName'), mountPath: v('volPath'), size: v('volSize') };
  if (vol.name || vol.mountPath || vol.size) {
    if (!vol.name || !vol.mountPath || !vol.size) {
      err.textContent = 'A volume needs a name, a mount path and a size (e.g. home, /home/coder, 1Gi).';
      return;
    }
    body.volumes.push(vol);
  }
  const submit = $('launch-submit');
  submit.disabled = true;
  submit.textContent = 'Launching…';
  try {
    const w = await api('/api/workspaces', { method: 'POST', body });
    upsert(w);
    say(`Launched ${w.namespace}/${w.name}.`);
    form.elements.name.value = '';
  } catch (e) {
    const named = !e.reason || e.reason === 'Error' || e.message.includes(e.reason);
    err.textContent = named ? e.message : `${e.reason}: ${e.message}`;
  } finally {
    submit.disabled = false;
    submit.textContent = 'Launch';
  }
}

// ---- events ------------------------------------------------------------------------------

const events = new Map(); // id → E
let lastEventId = null;

function eventItem(e) {
  const t = e.time ? new Date(e.time) : null;
  return el('li', {
    class: `event ${e.type === 'Warning' ? 'warning' : 'normal'}`,
    'data-testid': 'event',
    dataset: { id: e.id, name: e.name, namespace: e.namespace, reason: e.reason, type: e.type },
  },
  el('time', { datetime: e.time || '', title: e.time || '', text: t ? t.toLocaleTimeString() : '' }),
  ' ',
  el('span', { class: 'reason', text: e.reason || '' }),
  ' ',
  el('span', { class: 'target', text: `${e.namespace}/${e.name}` }),
  el('div', { class: 'message', text: e.message || '' }));
}

function renderEvents() {
  const warningsOnly = $('events-warnings').checked;
  const items = [...events.values()]
    .filter((e) => !warningsOnly || e.type === 'Warning')
    .sort(byNewest);
  $('events-list').replaceChildren(...items.map(eventItem));
  $('events-empty').hidden = items.length > 0;
}

function byNewest(a, b) {
  const ta = Date.parse(a.time) || 0;
  const tb = Date.parse(b.time) || 0;
  if (ta !== tb) return tb - ta;
  return String(b.id).localeCompare(String(a.id), undefined, { numeric: true });
}

function addEvent(e) {
  if (!e || e.id === undefined || e.id === null) return false;
  const id = String(e.id);
  if (events.has(id)) return false;
  events.set(id, e);
  lastEventId = id;
  if (events.size > MAX_EVENTS) {
    const oldest = [...events.values()].sort(byNewest).slice(MAX_EVENTS);
    for (const o of oldest) events.delete(String(o.id));
  }
  return true;
}

async function loadEvents() {
  const since = lastEventId ? `since=${seg(lastEventId)}&` : '';
  try {
    const data = await api(`/api/events?${since}types=Normal,Warning`);
    let added = false;
    for (const e of data.items || []) added = addEvent(e) || added;
    if (added) renderEvents();
    $('events-empty').hidden = events.size > 0;
  } catch (e) {
    if (e.status !== 401) $('events-live').textContent = 'Could not load events: ' + e.message;
  }
}

let stream = null;
let streamUp = false;

function connectEvents() {
  // EventSource reconnects by itself and sends Last-Event-ID, so the stream resumes without
  // gaps; ids are also deduplicated here.
  stream = new EventSource('/sse/events');
  stream.addEventListener('open', () => {
    streamUp = true;
    $('events-live').textContent = 'Live.';
    $('events-live').dataset.live = 'true';
    refreshSoon();
  });
  stream.addEventListener('workspace', (ev) => {
    let e;
    try {
      e = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (e.id === undefined && ev.lastEventId) e.id = ev.lastEventId;
    if (addEvent(e)) renderEvents();
    refreshSoon();
  });
  stream.addEventListener('error', async () => {
    streamUp = false;
    if (leaving) return;
    $('events-live').textContent = 'Live updates interrupted; retrying…';
    $('events-live').dataset.live = 'false';
    if (stream.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a 401 on the stream): check the session, then retry.
      stream = null;
      try {
        await api('/api/me');
      } catch {
        return;
      }
      setTimeout(() => { if (!stream) connectEvents(); }, POLL_OFFLINE_MS);
    }
  });
}

// ---- databases ---------------------------------------------------------------------------

const PAGE_ROWS = 50;
const MAX_CHANGES = 100;
let databasesLoaded = false;
let gdbItems = [];
/** What the data panel shows: the GuildDatabase, database, table, page and the row edited. */
const data = { gdb: null, db: '', table: '', primaryKey: 'id', after: null, next: null, editing: null, feed: null };
const gdbPath = (d) => `/api/databases/${seg(d.namespace)}/${seg(d.name)}`;
const tablePath = () => `${gdbPath(data.gdb)}/dbs/${seg(data.db)}/tables/${seg(data.table)}`;

async function refreshDatabases() {
  if (leaving) return;
  try {
    const answer = await api('/api/databases');
    gdbItems = answer.items || [];
    databasesLoaded = true;
    document.body.dataset.databasesLoaded = 'true';
    $('gdb-error').textContent = '';
    renderDatabases();
  } catch (e) {
    if (e.status !== 401) $('gdb-error').textContent = 'Could not load databases: ' + e.message;
  }
}

function gdbRow(d) {
  const n = d.name;
  const schema = d.schema ? d.schema.reason : '—';
  return el('tr', { 'data-testid': `gdb-row-${n}`, dataset: { namespace: d.namespace, name: n } },
    el('th', { scope: 'row' },
      el('span', { class: 'name', text: n }),
      el('div', { class: 'muted small', text: d.namespace })),
    el('td', { 'data-testid': `gdb-phase-${n}`, text: `${d.phase || 'Pending'} (${d.readyReplicas}/${d.replicas})` }),
    el('td', { title: d.schema ? d.schema.message : '', text: schema }),
    el('td', { class: 'small', text: d.endpoint || '—' }),
    el('td', { class: 'actions' }, el('button', {
      type: 'button',
      'data-testid': `gdb-browse-${n}`,
      'aria-label': `Browse the data of ${n}`,
      onclick: () => openData(d),
      text: 'Browse',
    })));
}

function renderDatabases() {
  $('gdb-body').replaceChildren(...gdbItems.map(gdbRow));
  $('gdb-table').hidden = gdbItems.length === 0;
  $('gdb-empty').hidden = !databasesLoaded || gdbItems.length > 0;
}

function dataError(e) {
  $('data-error').textContent = e ? e.message : '';
}

function fillSelect(select, names, current) {
  select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
  if (names.includes(current)) select.value = current;
  return select.value;
}

async function openData(d) {
  data.gdb = d;
  $('data-name').textContent = `${d.namespace}/${d.name}`;
  $('data').hidden = false;
  document.body.dataset.dataTable = '';
  try {
    const dbs = await api(`${gdbPath(d)}/dbs`);
    data.db = fillSelect($('data-db'), dbs.items || [], data.db);
    dataError(null);
    await loadTables();
  } catch (e) {
    dataError(e);
  }
  $('data').scrollIntoView({ block: 'start' });
}

function closeData() {
  stopFeed();
  $('data').hidden = true;
  data.gdb = null;
}

async function loadTables() {
  if (!data.db) {
    fillSelect($('data-table'), [], '');
    data.table = '';
    return showTable();
  }
  try {
    const tables = await api(`${gdbPath(data.gdb)}/dbs/${seg(data.db)}/tables`);
    data.table = fillSelect($('data-table'), tables.items || [], data.table);
    dataError(null);
  } catch (e) {
    dataError(e);
  }
  await showTable();
}

/** A table chosen: its first page, its export links, and a feed of its changes. */
async function showTable() {
  stopFeed();
  cancelEdit();
  $('changes-list').replaceChildren();
  const ready = !!data.table;
  for (const id of ['export-ndjson', 'export-csv']) {
    $(id).href = ready ? `${tablePath()}/export?format=${id.slice(7)}` : '#';
    $(id).setAttribute('download', ready ? `${data.db}.${data.table}.${id.slice(7)}` : '');
  }
  if (!ready) {
    $('rows-head').replaceChildren();
    $('rows-body').replaceChildren();
    return;
  }
  data.after = null;
  await loadRows();
  startFeed();
}

async function loadRows() {
  const query = new URLSearchParams({ limit: String(PAGE_ROWS) });
  if (data.after) query.set('after', data.after);
  try {
    const page = await api(`${tablePath()}/rows?${query}`);
    data.primaryKey = page.primaryKey || 'id';
    data.next = page.next;
    renderRows(page.items || []);
    dataError(null);
    document.body.dataset.dataTable = `${data.db}.${data.table}`;
  } catch (e) {
    dataError(e);
  }
}

function cell(value) {
  if (value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function renderRows(rows) {
  const pk = data.primaryKey;
  const columns = [pk, ...new Set(rows.flatMap((r) => Object.keys(r)).filter((k) => k !== pk).sort())];
  $('rows-head').replaceChildren(
    ...columns.map((c) => el('th', { scope: 'col', text: c })),
    el('th', { scope: 'col' }, el('span', { class: 'visually-hidden', text: 'Actions' })));
  $('rows-body').replaceChildren(...rows.map((r) => {
    const k = cell(r[pk]);
    return el('tr', { 'data-testid': `row-${k}`, dataset: { key: k } },
      ...columns.map((c) => el('td', { text: cell(r[c]) })),
      el('td', { class: 'actions' },
        el('button', { type: 'button', 'data-testid': `row-edit-${k}`, onclick: () => editRow(r), text: 'Edit' }),
        el('button', { type: 'button', class: 'danger', 'data-testid': `row-delete-${k}`, onclick: () => deleteRow(r), text: 'Delete' })));
  }));
  $('rows-empty').hidden = rows.length > 0;
  $('rows-next').disabled = !data.next;
}

/** The path of row `r` (a number key says so: a path segment is a string otherwise). */
function rowPath(r) {
  const k = r[data.primaryKey];
  return `${tablePath()}/rows/${seg(String(k))}${typeof k === 'number' ? '?keyType=number' : ''}`;
}

function editRow(r) {
  data.editing = r;
  $('row-label').textContent = `Row ${cell(r[data.primaryKey])} (JSON: the whole row)`;
  $('row-json').value = JSON.stringify(r, null, 2);
  $('row-save').textContent = 'Save';
  $('row-cancel').hidden = false;
  $('row-json').focus();
}

function cancelEdit() {
  data.editing = null;
  $('row-label').textContent = 'New row (JSON: an object, or an array of them)';
  $('row-json').value = '';
  $('row-save').textContent = 'Insert';
  $('row-cancel').hidden = true;
}

async function saveRow(ev) {
  ev.preventDefault();
  let body;
  try {
    body = JSON.parse($('row-json').value);
  } catch (e) {
    dataError(new Error('The row is not valid JSON: ' + e.message));
    return;
  }
  try {
    if (data.editing) {
      await api(rowPath(data.editing), { method: 'PUT', body });
      say(`Row ${cell(data.editing[data.primaryKey])} saved.`);
    } else {
      const result = await api(`${tablePath()}/rows`, { method: 'POST', body });
      say(`${result.inserted ?? 0} row(s) inserted.`);
    }
    cancelEdit();
    dataError(null);
    await loadRows();
  } catch (e) {
    dataError(e);
  }
}

async function deleteRow(r) {
  const k = cell(r[data.primaryKey]);
  if (!window.confirm(`Delete row ${k} of ${data.db}.${data.table}?`)) return;
  try {
    await api(rowPath(r), { method: 'DELETE' });
    say(`Row ${k} deleted.`);
    await loadRows();
  } catch (e) {
    dataError(e);
  }
}

async function importFile() {
  const file = $('import-file').files[0];
  if (!file || !data.table) return;
  const format = file.name.endsWith('.csv') ? 'csv' : file.name.endsWith('.json') ? 'json' : 'ndjson';
  try {
    const res = await fetch(`${tablePath()}/import?format=${format}`, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': format === 'csv' ? 'text/csv' : 'application/json' },
      body: await file.text(),
    });
    const report = await res.json().catch(() => ({}));
    if (report.error) throw new ApiError(res.status, report.error.reason, report.error.message);
    const failed = report.errors ? `; ${report.errors} refused: ${(report.failures || [])[0] || ''}` : '';
    say(`Imported ${file.name}: ${report.inserted} inserted, ${report.replaced} replaced${failed}.`, report.errors ? 'error' : 'info');
    dataError(null);
    await loadRows();
  } catch (e) {
    dataError(e);
  } finally {
    $('import-file').value = '';
  }
}

function stopFeed() {
  data.feed?.close();
  data.feed = null;
  $('changes-live').textContent = '';
  $('changes-live').dataset.live = 'false';
}

function startFeed() {
  const g = data.gdb;
  const feed = new EventSource(`/sse/databases/${seg(g.namespace)}/${seg(g.name)}/${seg(data.db)}/${seg(data.table)}/changes`);
  data.feed = feed;
  $('changes-live').textContent = 'Connecting…';
  feed.addEventListener('open', () => {
    $('changes-live').textContent = 'Live.';
    $('changes-live').dataset.live = 'true';
  });
  feed.addEventListener('change', (ev) => {
    let change;
    try {
      change = JSON.parse(ev.data);
    } catch {
      return;
    }
    const row = change.new_val ?? change.old_val ?? {};
    const what = change.old_val == null ? 'inserted' : change.new_val == null ? 'deleted' : 'changed';
    const item = el('li', { class: 'event normal', 'data-testid': 'change', dataset: { key: cell(row[data.primaryKey]), what } },
      el('time', { text: new Date().toLocaleTimeString() }), ' ',
      el('span', { class: 'reason', text: what }), ' ',
      el('span', { class: 'message', text: JSON.stringify(row) }));
    const list = $('changes-list');
    list.prepend(item);
    while (list.children.length > MAX_CHANGES) list.lastChild.remove();
  });
  feed.addEventListener('error', () => {
    if (data.feed !== feed) return;
    $('changes-live').dataset.live = 'false';
    $('changes-live').textContent = feed.readyState === EventSource.CLOSED
      ? 'Live changes stopped; choose the table again to retry.'
      : 'Live changes interrupted; retrying…';
  });
}

// ---- logout ------------------------------------------------------------------------------

async function logout(ev) {
  // A JSON POST passes the proxy's CSRF check whatever it requires of forms; without
  // JavaScript the form posts by itself.
  ev.preventDefault();
  if (leaving) return;
  leaving = true;
  stream?.close();
  stopFeed();
  stopFollowing();
  try {
    await fetch('/logout', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    });
  } catch {
    HTMLFormElement.prototype.submit.call(ev.target);
    return;
  }
  location.assign('/login');
}

// ---- start -------------------------------------------------------------------------------

function poll() {
  const wait = streamUp ? POLL_MS : POLL_OFFLINE_MS;
  setTimeout(async () => {
    if (leaving) return;
    if (!document.hidden) {
      await refresh();
      await refreshDatabases();
      if (!streamUp) await loadEvents();
    }
    poll();
  }, wait);
}

async function start() {
  $('launch').addEventListener('submit', launch);
  $('logout-form').addEventListener('submit', logout);
  $('refresh').addEventListener('click', () => { refresh(); say('Refreshed.'); });
  $('inline-close').addEventListener('click', closeInline);
  $('logs-close').addEventListener('click', closeLogs);
  $('logs-reload').addEventListener('click', loadLogs);
  $('logs-follow').addEventListener('change', loadLogs);
  $('events-warnings').addEventListener('change', renderEvents);
  $('data-close').addEventListener('click', closeData);
  $('data-db').addEventListener('change', () => { data.db = $('data-db').value; data.table = ''; loadTables(); });
  $('data-table').addEventListener('change', () => { data.table = $('data-table').value; showTable(); });
  $('rows-first').addEventListener('click', () => { data.after = null; loadRows(); });
  $('rows-next').addEventListener('click', () => { if (data.next) { data.after = data.next; loadRows(); } });
  $('row-form').addEventListener('submit', saveRow);
  $('row-cancel').addEventListener('click', cancelEdit);
  $('import-file').addEventListener('change', importFile);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshSoon(); });

  let me;
  try {
    me = await api('/api/me');
  } catch (e) {
    if (e.status !== 401) say('Could not reach GuildNet: ' + e.message, 'error');
    return;
  }
  $('user').textContent = me.user;
  $('user').title = (me.groups || []).join(', ');
  document.body.dataset.user = me.user;
  await Promise.all([refresh(), loadEvents(), refreshDatabases()]);
  connectEvents();
  poll();
  // Relative times ("5m ago") stay fresh between updates.
  setInterval(() => { if (!document.hidden && !busy.size) render(); }, 30000);
}

start();
