// relayflow dashboard: vanilla JS, no build step; one third-party file, dagre.min.js (the graph
// layout, vendored: static/VENDORED.md). It reads the same JSON API as the client and the CLI,
// with the same API key, and never loads a batch's items all at once: counts come from the
// execution's progress, items from the paged results API.
"use strict";

(function () {
  const KEY_STORAGE = "relayflow.apiKey";
  const POLL_MS = 1000; // an execution's page while it runs
  const LIST_POLL_MS = 3000; // the executions of a workflow
  const ITEMS_POLL_MS = 2000; // the first page of a running batch's items
  const PAGE_SIZE = 50;
  const ITEMS_PAGE_SIZE = 25;
  const MAX_SAMPLES = 600;
  const ACTIVE = new Set(["pending", "running"]);
  const TERMINAL_NODE = new Set(["completed", "failed", "timed_out", "cancelled", "skipped"]);
  const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
  const FAILED_NODE = new Set(["failed", "timed_out"]);

  // The API lives where the page does: strip "/dashboard…" (keeps an API Gateway stage prefix).
  const API_BASE = location.pathname.replace(/\/dashboard(\/.*)?$/, "");
  const samplesByExecution = new Map(); // execution id -> [{t, processed, failed}]
  let generation = 0; // bumped on every navigation; stale timers and answers check it
  let apiKey = null;

  // ---- DOM helpers (text only: nothing from the API is ever parsed as HTML) -------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "css") for (const [p, v] of Object.entries(value)) node.style.setProperty(p, v);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function $(id) {
    return document.getElementById(id);
  }

  function replace(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  // ---- formatting --------------------------------------------------------------------------
  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function parseTime(iso) {
    return iso ? Date.parse(iso) : NaN;
  }

  // Every time shown carries its date and its zone (the browser's), e.g. "2026-12-07 14:03:09 CET".
  const TIME_FORMAT = new Intl.DateTimeFormat("en-GB", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hourCycle: "h23", timeZoneName: "short",
  });

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const p = Object.fromEntries(TIME_FORMAT.formatToParts(d).map((part) => [part.type, part.value]));
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function runDuration(x) {
    const start = parseTime(x.started_at || x.created_at);
    const end = x.completed_at ? parseTime(x.completed_at) : ACTIVE.has(x.status) ? Date.now() : NaN;
    return end - start;
  }

  function shortText(value, width) {
    if (value === null || value === undefined) return "";
    const text = (typeof value === "string" ? value : JSON.stringify(value)).replace(/\s+/g, " ");
    return text.length > width ? text.slice(0, width - 1) + "…" : text;
  }

  function pretty(value) {
    if (value === null || value === undefined) return "";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function badge(status) {
    return el("span", { class: `badge s-${status}`, "data-status": status }, status.replace("_", " "));
  }

  // ---- API -----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || `${status} ${code}`);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, params, body) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") query.set(k, v);
    const url = API_BASE + path + (query.toString() ? `?${query}` : "");
    const headers = { accept: "application/json" };
    if (apiKey) headers["x-api-key"] = apiKey;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      throw new ApiError(0, "network", `the API did not answer (${err.message}).`);
    }
    if (!response.ok) {
      let answer = {};
      try {
        answer = await response.json();
      } catch (_) {
        /* not JSON */
      }
      let message = answer.message || response.statusText || `HTTP ${response.status}`;
      if (response.status === 401 || response.status === 403) {
        showKeyForm();
        message = `The API refused the request (${message}): enter a valid API key.`;
      }
      throw new ApiError(response.status, answer.code || "error", message);
    }
    return response;
  }

  const getJson = async (path, params) => (await api("GET", path, params)).json();
  const postJson = async (path, body) => (await api("POST", path, null, body)).json();

  // Every page of a listing (a version's nodes and edges: a few hundred at most).
  async function getAll(path) {
    const items = [];
    let token = null;
    do {
      const page = await getJson(path, { limit: 200, next_token: token });
      items.push(...page.items);
      token = page.next_token;
    } while (token);
    return items;
  }

  // ---- API key ---------------------------------------------------------------------------------
  function loadKey() {
    // `relayflow serve` opens #key=…: keep it, then take it out of the address bar and history.
    const match = location.hash.match(/^#key=([^&]*)(?:&(.*))?$/);
    if (match) {
      apiKey = decodeURIComponent(match[1]);
      localStorage.setItem(KEY_STORAGE, apiKey);
      history.replaceState(null, "", location.pathname + location.search + "#" + (match[2] || "/"));
    } else {
      apiKey = localStorage.getItem(KEY_STORAGE);
    }
    showKeyState();
  }

  function showKeyState() {
    $("key-state").textContent = apiKey ? `key …${apiKey.slice(-4)}` : "no key";
  }

  function showKeyForm() {
    const form = $("key-form");
    if (!form.hidden) return;
    form.hidden = false;
    $("key-input").focus();
  }

  function setupKeyForm() {
    $("key-change").addEventListener("click", () => {
      const form = $("key-form");
      form.hidden = !form.hidden;
      if (!form.hidden) $("key-input").focus();
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("key-input").value.trim();
      if (value) {
        apiKey = value;
        localStorage.setItem(KEY_STORAGE, value);
      }
      $("key-input").value = "";
      $("key-form").hidden = true;
      showKeyState();
      route();
    });
    $("key-forget").addEventListener("click", () => {
      apiKey = null;
      localStorage.removeItem(KEY_STORAGE);
      showKeyState();
    });
  }

  function banner(message) {
    const node = $("banner");
    node.hidden = !message;
    node.textContent = message || "";
  }

  function crumbs(...parts) {
    const nav = $("crumbs");
    nav.replaceChildren();
    parts.forEach((part, i) => {
      if (i) nav.append(el("span", { class: "sep" }, "›"));
      nav.append(part.href ? el("a", { href: part.href }, part.label) : el("span", {}, part.label));
    });
  }

  // ---- polling ---------------------------------------------------------------------------------
  // Runs fn now and every `ms` while the view it belongs to is shown; fn returns false to stop.
  function poll(ms, fn) {
    const mine = generation;
    const tick = async () => {
      if (mine !== generation) return;
      let again = true;
      if (!document.hidden) {
        try {
          again = (await fn(() => mine !== generation)) !== false;
          if (mine === generation) banner("");
        } catch (err) {
          if (mine === generation) banner(err.message);
        }
      }
      if (again && mine === generation) setTimeout(tick, ms);
    };
    tick();
  }

  // A "newer / older" pager over next_token pages: tokens[i] opens page i.
  function pager(onChange, labels) {
    const [back, forward] = labels || ["‹ Newer", "Older ›"];
    const state = { tokens: [null], index: 0, next: null };
    const prev = el("button", { type: "button", "data-testid": "page-prev" }, back);
    const next = el("button", { type: "button", "data-testid": "page-next" }, forward);
    const label = el("span", { class: "muted" });
    prev.addEventListener("click", () => {
      if (state.index > 0) {
        state.index -= 1;
        onChange();
      }
    });
    next.addEventListener("click", () => {
      if (state.next) {
        state.tokens[state.index + 1] = state.next;
        state.tokens.length = state.index + 2;
        state.index += 1;
        onChange();
      }
    });
    state.node = el("div", { class: "pager" }, prev, label, next);
    state.token = () => state.tokens[state.index];
    state.update = (nextToken, count, pages) => {
      state.next = nextToken;
      prev.disabled = state.index === 0;
      next.disabled = !nextToken;
      label.textContent =
        `page ${fmtInt(state.index + 1)}` + (pages ? ` of ${fmtInt(pages)}` : "") + (count !== undefined ? ` · ${count} shown` : "");
    };
    state.reset = () => {
      state.tokens = [null];
      state.index = 0;
    };
    return state;
  }

  // ---- graphs (laid out by dagre, drawn here as SVG) ------------------------------------------
  const NODE_W = 180;
  const NODE_H = 58;
  const TEXT_W = NODE_W - 13 - 8; // from the text's left edge to the box's right edge, less a margin

  // Text cut with "…" to the width it has, measured in the font it is drawn in.
  const measure = document.createElement("canvas").getContext("2d");
  function fitText(text, font, width) {
    if (!text) return "";
    const flat = String(text).replace(/\s+/g, " ");
    measure.font = font;
    if (measure.measureText(flat).width <= width) return flat;
    let lo = 0;
    let hi = flat.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (measure.measureText(flat.slice(0, mid) + "…").width <= width) lo = mid;
      else hi = mid - 1;
    }
    return flat.slice(0, lo) + "…";
  }

  function graphFonts() {
    const sans = getComputedStyle(document.body).fontFamily;
    const mono = getComputedStyle(document.documentElement).getPropertyValue("--mono").trim() || "monospace";
    return { name: `600 13px ${sans}`, sub: `11px ${sans}`, meta: `11px ${mono}` };
  }

  // A node's state as a person reads it: a running node that already failed an attempt is retrying.
  function nodeState(n) {
    if (!n) return "pending";
    if (n.status === "running" && ((n.attempts || 0) > 1 || (n.attempt_errors || []).length)) return "retrying";
    return n.status;
  }

  function svgText(x, y, cls, text) {
    const node = svg("text", { x, y, class: cls });
    node.textContent = text;
    return node;
  }

  // nodes: [{id, name, sub, meta, state}], edges: [{from, to}]; onSelect(id) on a click.
  function drawGraph(nodes, edges, onSelect, selected) {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "TB", nodesep: 14, ranksep: 40, edgesep: 8, marginx: 10, marginy: 10 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
    for (const e of edges) if (g.hasNode(e.from) && g.hasNode(e.to)) g.setEdge(e.from, e.to);
    dagre.layout(g);
    const { width, height } = g.graph();
    const root = svg("svg", {
      width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
      class: "dag", role: "group", "aria-label": `graph of ${nodes.length} nodes`, "data-testid": "graph",
    });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
    defs.append(marker);
    root.append(defs);
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const fonts = graphFonts();
    for (const e of g.edges()) {
      const points = g.edge(e).points;
      const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
      const from = byId.get(e.v);
      root.append(svg("path", { d, class: `edge from-${from ? from.state || "none" : "none"}`, "marker-end": "url(#arrow)", "data-edge": `${e.v}>${e.w}` }));
    }
    for (const n of nodes) {
      const box = g.node(n.id);
      const group = svg("g", {
        class: `gnode s-${n.state || "static"} ${selected === n.id ? "selected" : ""}`,
        transform: `translate(${(box.x - NODE_W / 2).toFixed(1)},${(box.y - NODE_H / 2).toFixed(1)})`,
        "data-node": n.id, "data-state": n.state || "", "data-testid": "graph-node", tabindex: 0, role: "button",
        "aria-label": `${n.name}${n.state ? ": " + n.state : ""}`,
      });
      const title = svg("title");
      title.textContent = [n.name, n.sub, n.meta].filter(Boolean).join("\n");
      group.append(
        title,
        svg("rect", { class: "box", width: NODE_W, height: NODE_H, rx: 7 }),
        svg("rect", { class: "stripe", width: 5, height: NODE_H - 2, x: 1, y: 1, rx: 3 }),
        svgText(13, 19, "gname", fitText(n.name, fonts.name, TEXT_W)),
        svgText(13, 35, "gsub", fitText(n.sub, fonts.sub, TEXT_W)),
        svgText(13, 50, "gmeta", fitText(n.meta, fonts.meta, TEXT_W)),
      );
      const select = () => {
        for (const other of root.querySelectorAll(".gnode.selected")) other.classList.remove("selected");
        group.classList.add("selected");
        onSelect(n.id);
      };
      group.addEventListener("click", select);
      group.addEventListener("keydown", (event) => event.key === "Enter" && select());
      root.append(group);
    }
    return el("div", { class: "graphbox" }, root);
  }

  function graphLegend(states) {
    return el("div", { class: "legend" }, states.map((s) => el("span", { class: `lg s-${s}` }, s)));
  }

  const modelCache = new Map();
  async function modelOf(id) {
    if (!modelCache.has(id)) modelCache.set(id, getJson(`/models/${encodeURIComponent(id)}`).catch(() => null));
    return modelCache.get(id);
  }

  function modelLabel(model) {
    if (!model) return "model not found";
    const name = model.config && (model.config.model || model.config.model_id || model.config.endpoint_name || model.config.function_name);
    return `${model.name} · ${model.provider}${name ? "/" + name : ""}`;
  }

  // A version's nodes (in their order), edges and each node's model.
  async function versionGraph(versionId) {
    const v = encodeURIComponent(versionId);
    const [nodes, edges] = await Promise.all([getAll(`/versions/${v}/nodes`), getAll(`/versions/${v}/edges`)]);
    nodes.sort((a, b) => a.position - b.position);
    const models = await Promise.all(nodes.map((n) => modelOf(n.entity_id)));
    nodes.forEach((n, i) => (n.model = models[i]));
    // Without edges a version's nodes run as a chain in creation order (domain/graph.py).
    const implicit = !edges.length;
    const drawn = implicit
      ? nodes.slice(1).map((n, i) => ({ from: nodes[i].id, to: n.id }))
      : edges.map((e) => ({ from: e.begin_node_id, to: e.end_node_id }));
    return { nodes, edges: drawn, implicit };
  }

  // ---- views -------------------------------------------------------------------------------------
  function showWorkflows(view) {
    crumbs({ label: "Workflows" });
    const body = el("tbody");
    const pages = pager(() => load());
    const table = el(
      "table",
      { class: "grid", "data-testid": "workflows" },
      el("thead", {}, el("tr", {}, ["Name", "Description", "Created", "Id"].map((h) => el("th", {}, h)))),
      body,
    );
    replace(view, el("h1", {}, "Workflows"), table, pages.node);
    async function load() {
      const page = await getJson("/workflows", { limit: PAGE_SIZE, next_token: pages.token() });
      body.replaceChildren();
      for (const wf of page.items) {
        const href = `#/workflows/${encodeURIComponent(wf.id)}`;
        body.append(
          el(
            "tr",
            { class: "clickable", onclick: () => (location.hash = href) },
            el("td", {}, el("a", { href }, wf.name)),
            el("td", { class: "muted" }, shortText(wf.description, 80)),
            el("td", {}, fmtTime(wf.created_at)),
            el("td", { class: "mono muted" }, wf.id),
          ),
        );
      }
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No workflows yet.")));
      pages.update(page.next_token, page.items.length);
    }
    poll(LIST_POLL_MS * 5, load);
  }

  // How far a run got, in segments drawn in their colours: ok (completed), bad (failed).
  function progressOf(x) {
    const p = x.progress || {};
    if (x.input_mode === "batch") {
      const total = p.total_items || 0;
      const processed = p.processed_items || 0;
      const failed = p.failed_items || 0;
      const label = `${fmtInt(processed)} / ${fmtInt(total)} items processed` + (processed ? ` · ${fmtInt(processed - failed)} completed · ${fmtInt(failed)} failed` : "");
      return { total, ok: processed - failed, bad: failed, label };
    }
    const total = p.total_nodes || 0;
    const records = Object.values(x.node_executions || {});
    if (records.length) {
      const count = (pred) => records.filter((n) => pred(n.status)).length;
      const ok = count((s) => s === "completed");
      const bad = count((s) => FAILED_NODE.has(s));
      const skipped = count((s) => s === "skipped");
      const cancelled = count((s) => s === "cancelled");
      const parts = [`${fmtInt(ok)} / ${fmtInt(total)} nodes completed`];
      if (bad) parts.push(`${fmtInt(bad)} failed`);
      if (skipped) parts.push(`${fmtInt(skipped)} skipped`);
      if (cancelled) parts.push(`${fmtInt(cancelled)} cancelled`);
      return { total, ok, bad, label: parts.join(" · ") };
    }
    // A page of the history carries no node records: the run's own counts where the API keeps
    // them (completed_nodes, …), else the node the run last moved to.
    if (typeof p.completed_nodes === "number") {
      const parts = [`${fmtInt(p.completed_nodes)} / ${fmtInt(total)} nodes completed`];
      if (p.failed_nodes) parts.push(`${fmtInt(p.failed_nodes)} failed`);
      if (p.skipped_nodes) parts.push(`${fmtInt(p.skipped_nodes)} skipped`);
      if (p.cancelled_nodes) parts.push(`${fmtInt(p.cancelled_nodes)} cancelled`);
      return { total, ok: p.completed_nodes, bad: p.failed_nodes || 0, label: parts.join(" · ") };
    }
    const at = Math.min(p.current_node_idx || 0, total);
    if (x.status === "completed") return { total, ok: total, bad: 0, label: `${fmtInt(total)} / ${fmtInt(total)} nodes` };
    if (x.status === "failed") return { total, ok: at, bad: total ? 1 : 0, label: `failed at node ${fmtInt(at + 1)} of ${fmtInt(total)}` };
    if (x.status === "cancelled") return { total, ok: at, bad: 0, label: `cancelled at node ${fmtInt(at + 1)} of ${fmtInt(total)}` };
    if (x.status === "pending") return { total, ok: 0, bad: 0, label: `0 / ${fmtInt(total)} nodes` };
    return { total, ok: at, bad: 0, label: `node ${fmtInt(at + 1)} of ${fmtInt(total)}` };
  }

  function progressBar(x, big) {
    const { total, ok, bad, label } = progressOf(x);
    const pct = (n) => (total ? Math.min(100, (n / total) * 100) : 0);
    return el(
      "div",
      { class: `bar ${big ? "big" : ""} ${ACTIVE.has(x.status) ? "live" : ""}`, "data-testid": "progress", "data-status": x.status },
      el("div", { class: "fill ok", "data-testid": "progress-ok", css: { width: `${pct(ok).toFixed(2)}%` } }),
      el("div", { class: "fill bad", "data-testid": "progress-bad", css: { width: `${pct(bad).toFixed(2)}%` } }),
      el("span", { class: "bar-label" }, label),
    );
  }

  // A table of executions (a workflow's, or one version's): polled while shown.
  function executionsTable(workflowId, versionNumbers, versionId) {
    const filter = el(
      "select",
      { "data-testid": "status-filter", "aria-label": "status" },
      el("option", { value: "" }, "all statuses"),
      STATUSES.map((s) => el("option", { value: s }, s)),
    );
    const body = el("tbody");
    const pages = pager(() => load());
    filter.addEventListener("change", () => {
      pages.reset();
      load();
    });
    const heads = ["#", "Status", "Version", "Mode", "Progress", "Created", "Duration", "Id"];
    const table = el(
      "table",
      { class: "grid", "data-testid": "executions" },
      el("thead", {}, el("tr", {}, heads.map((h) => el("th", {}, h)))),
      body,
    );
    async function load() {
      const page = await getJson(`/workflows/${encodeURIComponent(workflowId)}/executions`, {
        limit: PAGE_SIZE,
        status: filter.value,
        version_id: versionId,
        next_token: pages.token(),
      });
      body.replaceChildren();
      for (const x of page.items) {
        const href = `#/workflows/${encodeURIComponent(workflowId)}/executions/${encodeURIComponent(x.id)}`;
        const vhref = `#/workflows/${encodeURIComponent(workflowId)}/versions/${encodeURIComponent(x.version_id)}`;
        const vnum = versionNumbers.get(x.version_id);
        body.append(
          el(
            "tr",
            { class: "clickable", "data-execution": x.id, onclick: () => (location.hash = href) },
            el("td", {}, el("a", { href }, `#${x.number}`)),
            el("td", {}, badge(x.status), x.completed_with_failures ? el("span", { class: "badge s-failed small-badge", title: "completed, with failures" }, "with failures") : null),
            el("td", {}, el("a", { href: vhref, onclick: (e) => e.stopPropagation() }, vnum ? `v${vnum}` : x.version_id.slice(0, 8))),
            el("td", {}, x.input_mode),
            el("td", { class: "wide" }, progressBar(x, false)),
            el("td", {}, fmtTime(x.created_at)),
            el("td", {}, fmtDuration(runDuration(x))),
            el("td", { class: "mono muted" }, x.id.slice(0, 8)),
          ),
        );
      }
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: heads.length, class: "muted" }, "No executions.")));
      pages.update(page.next_token, page.items.length);
    }
    return { filter, node: el("div", {}, table, pages.node), load };
  }

  async function workflowAndVersions(workflowId) {
    const wf = encodeURIComponent(workflowId);
    const [workflow, versions] = await Promise.all([getJson(`/workflows/${wf}`), getAll(`/workflows/${wf}/versions`)]);
    versions.sort((a, b) => b.number - a.number);
    return { workflow, versions, numbers: new Map(versions.map((v) => [v.id, v.number])) };
  }

  function versionName(v) {
    return `v${v.number}` + (v.name && v.name !== `v${v.number}` ? ` ${v.name}` : "");
  }

  async function showWorkflow(view, workflowId) {
    const { workflow, versions, numbers } = await workflowAndVersions(workflowId);
    const wf = encodeURIComponent(workflowId);
    crumbs({ label: "Workflows", href: "#/" }, { label: workflow.name });
    const rows = versions.map((v) => {
      const href = `#/workflows/${wf}/versions/${encodeURIComponent(v.id)}`;
      const active = v.id === workflow.active_version_id;
      return el(
        "tr",
        { class: `clickable ${active ? "active" : ""}`, "data-version": v.id, "data-testid": "version-row", onclick: () => (location.hash = href) },
        el("td", {}, el("a", { href }, versionName(v)), active ? el("span", { class: "badge s-active", "data-testid": "active-version" }, "active") : null),
        el("td", {}, `${v.config.max_retries} retries · ${v.config.retry_delay_seconds}–${v.config.max_retry_delay_seconds} s apart · node timeout ${v.config.node_timeout} s`),
        el("td", {}, fmtTime(v.created_at)),
        el("td", { class: "mono muted" }, v.id.slice(0, 8)),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No versions yet.")));
    const runs = executionsTable(workflowId, numbers, null);
    replace(
      view,
      el("div", { class: "xheader" },
        el("h1", {}, workflow.name, " ", el("span", { class: "muted small mono" }, workflow.id)),
        el("div", { class: "actions" }, el("a", { class: "button primary", href: `#/workflows/${wf}/start`, "data-testid": "start-run" }, "Start a run…"))),
      workflow.description ? el("p", { class: "muted" }, workflow.description) : null,
      el("h2", {}, "Versions"),
      el("table", { class: "grid", "data-testid": "versions" },
        el("thead", {}, el("tr", {}, ["Version", "Retry policy", "Created", "Id"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)),
      el("div", { class: "toolbar" }, el("h2", {}, "Executions"), runs.filter),
      runs.node,
    );
    poll(LIST_POLL_MS, runs.load);
  }

  function dl(pairs, testid) {
    return el("dl", { class: "summary", "data-testid": testid }, pairs.filter(Boolean).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function versionNodeDetail(panel, n, byId, graph) {
    panel.hidden = false;
    const parents = graph.edges.filter((e) => e.to === n.id).map((e) => (byId.get(e.from) || {}).name || e.from);
    const c = n.config || {};
    replace(
      panel,
      el("h2", {}, n.name),
      dl([
        ["Model", modelLabel(n.model)],
        ["Model config", el("pre", { class: "clip" }, pretty(n.model ? n.model.config : null) || "–")],
        ["Parents", parents.length ? parents.join(", ") : "none (a first node: it reads the run's input)"],
        ["Timeout", c.timeout ? `${c.timeout} s` : "the version's node timeout"],
        ["On failure", c.on_failure],
        ["Output", c.output_format],
      ], "node-config"),
      el("h3", {}, "Input template"),
      el("pre", { "data-testid": "node-template" }, c.input_template || ""),
    );
  }

  async function showVersion(view, workflowId, versionId) {
    const [{ workflow, versions, numbers }, graph] = await Promise.all([workflowAndVersions(workflowId), versionGraph(versionId)]);
    const version = versions.find((v) => v.id === versionId);
    if (!version) throw new Error(`no version ${versionId} in this workflow.`);
    const wf = encodeURIComponent(workflowId);
    const active = version.id === workflow.active_version_id;
    crumbs({ label: "Workflows", href: "#/" }, { label: workflow.name, href: `#/workflows/${wf}` }, { label: `Version ${version.number}` });
    const detail = el("section", { class: "card", "data-testid": "detail", hidden: true });
    const byId = new Map(graph.nodes.map((n) => [n.id, n]));
    const drawn = graph.nodes.map((n) => ({
      id: n.id, name: n.name, sub: modelLabel(n.model),
      meta: shortText(n.config.input_template, 40) + (n.config.on_failure === "continue" ? " · continue" : ""),
    }));
    const c = version.config;
    const runs = executionsTable(workflowId, numbers, versionId);
    replace(
      view,
      el("div", { class: "xheader" },
        el("h1", {}, `Version ${version.number}`, version.name && version.name !== `v${version.number}` ? ` ${version.name}` : "", " ",
          active ? el("span", { class: "badge s-active", "data-testid": "active-version" }, "active") : el("span", { class: "badge" }, "not active"),
          el("span", { class: "muted small mono" }, version.id)),
        el("div", { class: "actions" }, el("a", { class: "button primary", href: `#/workflows/${wf}/start/${encodeURIComponent(versionId)}`, "data-testid": "start-run" }, "Start a run of this version…"))),
      dl([
        ["Nodes", `${graph.nodes.length} nodes · ` + (graph.implicit ? "no edges: a chain in creation order" : `${graph.edges.length} edges`)],
        ["Retries", `${c.max_retries} per node, ${c.retry_delay_seconds} s apart doubling up to ${c.max_retry_delay_seconds} s`],
        ["Node timeout", `${c.node_timeout} s`],
        ["Created", fmtTime(version.created_at)],
        ["Updated", fmtTime(version.updated_at)],
      ], "version-config"),
      el("section", { class: "card" },
        el("h2", {}, "Graph ", el("span", { class: "muted small" }, "each node starts when its parents end · click a node for its model and template")),
        graph.nodes.length ? drawGraph(drawn, graph.edges, (id) => versionNodeDetail(detail, byId.get(id), byId, graph)) : el("p", { class: "muted" }, "This version has no nodes yet.")),
      detail,
      el("div", { class: "toolbar" }, el("h2", {}, "Runs of this version"), runs.filter),
      runs.node,
    );
    poll(LIST_POLL_MS, runs.load);
  }

  // ---- one execution -----------------------------------------------------------------------------
  async function showExecution(view, workflowId, executionId) {
    const base = `/workflows/${encodeURIComponent(workflowId)}/executions/${encodeURIComponent(executionId)}`;
    const { workflow, numbers } = await workflowAndVersions(workflowId);
    const header = el("div", { class: "xheader" });
    const notice = el("div", { class: "notice", "data-testid": "notice", hidden: true });
    const summary = el("dl", { class: "summary" });
    const progress = el("section", { class: "card" });
    const graphCard = el("section", { class: "card", hidden: true });
    const detail = el("section", { class: "card", "data-testid": "detail", hidden: true });
    const body = el("div");
    replace(view, header, notice, progress, graphCard, detail, summary, body);
    let first = true;
    let selectedNode = null;
    let itemsPanel = null;
    let graph = null;

    poll(POLL_MS, async (stale) => {
      const x = await getJson(base);
      if (stale()) return false;
      if (first) {
        crumbs(
          { label: "Workflows", href: "#/" },
          { label: workflow.name, href: `#/workflows/${encodeURIComponent(workflowId)}` },
          { label: `Execution #${x.number}` },
        );
        first = false;
        graph = await versionGraph(x.version_id).catch(() => ({ nodes: [], edges: [] }));
        if (stale()) return false;
        if (x.input_mode === "batch") renderBatchGraph(graphCard, graph);
      }
      renderHeader(header, x, base, numbers.get(x.version_id));
      renderNotice(notice, x);
      renderSummary(summary, x, base);
      if (x.input_mode === "batch") {
        renderBatchProgress(progress, x);
        if (!itemsPanel) {
          itemsPanel = itemsTable(base, detail);
          body.replaceChildren(itemsPanel.node);
          view.append(detail); // an item opens below the list it was clicked in
        }
        itemsPanel.refresh(x);
      } else {
        replace(progress, el("h2", {}, "Progress"), progressBar(x, true));
        const select = (nodeId) => {
          selectedNode = nodeId;
          renderNodeDetail(detail, x.node_executions[nodeId] || { node_id: nodeId, name: nodeId, status: "pending" });
          renderRunGraph(graphCard, x, graph, select, selectedNode);
          renderTimeline(body, x, select, selectedNode);
        };
        renderRunGraph(graphCard, x, graph, select, selectedNode);
        renderTimeline(body, x, select, selectedNode);
        if (selectedNode) renderNodeDetail(detail, x.node_executions[selectedNode] || { node_id: selectedNode, name: selectedNode, status: "pending" });
      }
      return ACTIVE.has(x.status) || (itemsPanel !== null && itemsPanel.pending());
    });
  }

  // The third line of a node on a run's graph: state, attempts (↻N when retried), duration.
  function nodeMeta(n) {
    if (!n) return "pending";
    const state = nodeState(n);
    const parts = [state];
    if ((n.attempts || 0) > 1) parts.push(`↻${n.attempts}`);
    const start = parseTime(n.started_at);
    const ms = n.status === "running" && !Number.isNaN(start) ? Date.now() - start : n.duration_ms ?? parseTime(n.completed_at) - start;
    if (ms !== null && ms !== undefined && !Number.isNaN(ms)) parts.push(fmtDuration(ms));
    return parts.join(" · ");
  }

  // The run on its version's graph: each node in its live state (the version's nodes and edges;
  // a node the run recorded that the version no longer has is drawn apart).
  function renderRunGraph(card, x, graph, onSelect, selected) {
    if (!graph) return;
    const records = x.node_executions || {};
    const ids = new Set(graph.nodes.map((n) => n.id));
    const drawn = graph.nodes.map((n) => ({ id: n.id, name: n.name, sub: modelLabel(n.model), state: nodeState(records[n.id]), meta: nodeMeta(records[n.id]) }));
    for (const n of Object.values(records)) {
      if (!ids.has(n.node_id)) drawn.push({ id: n.node_id, name: n.name || n.node_id, sub: "not in the version now", state: nodeState(n), meta: nodeMeta(n) });
    }
    if (!drawn.length) return;
    card.hidden = false;
    replace(
      card,
      el("h2", {}, "Graph ", el("span", { class: "muted small" }, "each node in its state · click a node for its prompt, output and attempts")),
      graphLegend(["pending", "running", "retrying", "completed", "failed", "skipped", "cancelled"]),
      drawGraph(drawn, graph.edges, onSelect, selected),
    );
  }

  // A batch run's version graph, each item's path through it. Its nodes carry no state: the API
  // keeps a batch's counts per item, not per node (an item's nodes: click it in the list below).
  function renderBatchGraph(card, graph) {
    if (!graph.nodes.length) return;
    card.hidden = false;
    const drawn = graph.nodes.map((n) => ({ id: n.id, name: n.name, sub: modelLabel(n.model), meta: "runs for each item" }));
    replace(
      card,
      el("h2", {}, "Graph ", el("span", { class: "muted small" }, "the version each item runs through · an item's own nodes: click it below")),
      drawGraph(drawn, graph.edges, () => {}, null),
    );
  }

  function renderHeader(header, x, base, versionNumber) {
    const actions = el("div", { class: "actions" });
    if (ACTIVE.has(x.status)) {
      actions.append(
        el("button", { type: "button", class: "danger", "data-testid": "cancel", onclick: () => act(base + "/cancel", "Cancel this run?") }, "Cancel"),
      );
    }
    const p = x.progress || {};
    if (x.input_mode === "batch" && !ACTIVE.has(x.status) && (p.failed_items || 0) > 0) {
      actions.append(
        el("button", { type: "button", "data-testid": "retry-failed", onclick: () => act(base + "/retry-failed", `Run the ${fmtInt(p.failed_items)} failed items again?`, true, {}) }, `Retry ${fmtInt(p.failed_items)} failed items`),
      );
    }
    actions.append(
      el("button", { type: "button", "data-testid": "rerun", onclick: () => act(base + "/rerun", "Start a new run with the same input?", true) }, "Re-run"),
    );
    const vhref = `#/workflows/${encodeURIComponent(x.workflow_id)}/versions/${encodeURIComponent(x.version_id)}`;
    replace(
      header,
      el("h1", {}, `Execution #${x.number} `, badge(x.status),
        el("a", { class: "vlink", href: vhref, "data-testid": "execution-version" }, versionNumber ? `version ${versionNumber}` : `version ${x.version_id.slice(0, 8)}`),
        el("span", { class: "muted small mono" }, " ", x.id)),
      actions,
    );
  }

  // What the bar alone does not say: a completed run whose `continue` nodes failed.
  function renderNotice(notice, x) {
    const failed = Object.values(x.node_executions || {}).filter((n) => FAILED_NODE.has(n.status));
    if (x.status === "completed" && failed.length) {
      notice.hidden = false;
      notice.textContent = `Completed with ${failed.length} failed node${failed.length > 1 ? "s" : ""} (on_failure: continue): ${failed.map((n) => n.name || n.node_id).join(", ")}.`;
    } else if (x.input_mode === "batch" && x.status === "completed" && (x.progress || {}).failed_items) {
      notice.hidden = false;
      const allowed = x.batch_config && x.batch_config.max_failed_percent;
      notice.textContent = `Completed with ${fmtInt(x.progress.failed_items)} failed items` + (allowed !== null && allowed !== undefined ? ` (at most ${allowed}% may fail).` : ".");
    } else {
      notice.hidden = true;
    }
  }

  async function act(path, question, navigate, body) {
    if (!window.confirm(question)) return;
    try {
      const answer = await postJson(path, body);
      if (navigate) location.hash = `#/workflows/${encodeURIComponent(answer.workflow_id)}/executions/${encodeURIComponent(answer.id)}`;
      else route();
    } catch (err) {
      banner(err.message);
    }
  }

  function renderSummary(summary, x, base) {
    const rows = [
      ["Mode", x.input_mode],
      ["Created", fmtTime(x.created_at)],
      ["Started", fmtTime(x.started_at)],
      ["Finished", fmtTime(x.completed_at)],
      ["Duration", fmtDuration(runDuration(x))],
    ];
    if (x.timeout) rows.push(["Timeout", `${x.timeout} s`]);
    const runLink = (id) => el("a", { href: `#/workflows/${encodeURIComponent(x.workflow_id)}/executions/${encodeURIComponent(id)}` }, id);
    if (x.rerun_of) rows.push(["Re-run of", runLink(x.rerun_of)]);
    if (x.retry_of) rows.push(["Retry of", runLink(x.retry_of)]);
    if (x.usage) rows.push(["Tokens", `${fmtInt(x.usage.input_tokens)} in · ${fmtInt(x.usage.output_tokens)} out`]);
    if (x.batch_config) {
      const b = x.batch_config;
      rows.push(["Dataset", `${b.dataset_id} / ${b.dataset_version_id}`]);
      rows.push(["Input field", b.input_field]);
      if (b.filter_query) rows.push(["Filter", b.filter_query]);
      rows.push(["Parallelism", String(b.parallelism)]);
    }
    summary.replaceChildren();
    for (const [k, v] of rows) summary.append(el("dt", {}, k), el("dd", {}, v));
    if (x.single_input !== null && x.single_input !== undefined) {
      summary.append(el("dt", {}, "Input"), el("dd", {}, el("pre", { class: "clip" }, shortText(x.single_input, 2000))));
    }
    if (x.input_file) {
      const link = el("button", { type: "button", class: "link", onclick: () => downloadInput(base, x.input_file.filename) }, x.input_file.filename);
      summary.append(el("dt", {}, "Input file"), el("dd", {}, link, el("span", { class: "muted" }, ` ${fmtInt(x.input_file.size)} bytes`)));
    }
    if (x.status === "pending" && x.waiting_reason) summary.append(el("dt", {}, "Waiting"), el("dd", { "data-testid": "execution-waiting" }, x.waiting_reason));
    if (x.error) summary.append(el("dt", {}, "Error"), el("dd", { class: "error", "data-testid": "execution-error" }, x.error));
    if (x.status === "completed" && x.input_mode === "single") {
      // A single run's results: the text its last node produced (and a JSON node's value apart).
      const final = x.results || {};
      summary.append(el("dt", {}, "Result"), el("dd", {}, el("pre", { "data-testid": "result" }, pretty(final.parsed_output ?? final.output))));
    }
  }

  async function downloadInput(base, filename) {
    try {
      const response = await api("GET", base + "/input");
      const url = URL.createObjectURL(await response.blob());
      const a = el("a", { href: url, download: filename });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      banner(err.message);
    }
  }

  // Per-node timeline: one row per node, its bar placed by when it started and ended in the run.
  function renderTimeline(container, x, onSelect, selected) {
    const nodes = Object.values(x.node_executions || {});
    const runStart = parseTime(x.started_at || x.created_at);
    const ends = nodes.map((n) => parseTime(n.completed_at)).filter((t) => !Number.isNaN(t));
    const runEnd = ACTIVE.has(x.status) ? Date.now() : Math.max(parseTime(x.completed_at) || 0, ...ends, runStart + 1);
    const span = Math.max(runEnd - runStart, 1);
    const rows = nodes.map((n) => {
      const start = parseTime(n.started_at);
      const end = n.completed_at ? parseTime(n.completed_at) : n.status === "running" ? Date.now() : NaN;
      const track = el("div", { class: "track" });
      if (!Number.isNaN(start)) {
        const left = ((start - runStart) / span) * 100;
        const width = Number.isNaN(end) ? 0 : ((end - start) / span) * 100;
        track.append(
          el("div", {
            class: `span s-${n.status}`,
            css: { left: `${Math.max(0, left).toFixed(2)}%`, width: `max(3px, ${Math.min(100, width).toFixed(2)}%)` },
            title: `${fmtTime(n.started_at)} → ${fmtTime(n.completed_at)}`,
          }),
        );
      }
      const retries = (n.attempts || 0) > 1 ? el("span", { class: "retry", title: (n.attempt_errors || []).join("\n") }, `↻ ${n.attempts} attempts`) : null;
      const wallMs = Number.isNaN(end) || Number.isNaN(start) ? null : end - start;
      const shownMs = n.status === "running" ? wallMs : n.duration_ms ?? wallMs;
      const retried = (n.attempts || 0) > 1 && wallMs !== null ? ` (${fmtDuration(wallMs)} with retries)` : "";
      return el(
        "div",
        {
          class: `trow clickable ${selected === n.node_id ? "selected" : ""}`,
          role: "button",
          tabindex: 0,
          "data-node": n.node_id,
          "data-testid": "node-row",
          onclick: () => {
            onSelect(n.node_id);
            for (const row of container.querySelectorAll(".trow")) row.classList.toggle("selected", row.dataset.node === n.node_id);
          },
          onkeydown: (e) => e.key === "Enter" && e.currentTarget.click(),
        },
        el("div", { class: "tname" }, n.name || n.node_id),
        track,
        el("div", { class: "tstat" }, badge(n.status), " ", fmtDuration(shownMs), retried, " ", retries),
      );
    });
    replace(
      container,
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Nodes ", el("span", { class: "muted small" }, "timeline from start to end of the run · click a node for its prompt and output")),
        el("div", { class: "timeline", "data-testid": "timeline" }, rows),
      ),
    );
  }

  // Each attempt of a node: its number, how it ended, when it started and ended, and its error
  // (the record keeps every failed attempt's error and times; the latest attempt's start).
  function attemptRows(n) {
    const errors = new Map();
    for (const line of n.attempt_errors || []) {
      const match = /^attempt (\d+): ([\s\S]*)$/.exec(line);
      if (match) errors.set(Number(match[1]), match[2]);
    }
    const times = new Map((n.attempt_times || []).map((t) => [t.attempt, t]));
    const count = Math.max(n.attempts || 0, ...errors.keys(), 0);
    const rows = [];
    for (let i = 1; i <= count; i += 1) {
      const last = i === count;
      let outcome = errors.has(i) ? "failed" : last ? nodeState(n) : "failed";
      if (last && FAILED_NODE.has(n.status)) outcome = n.status;
      const error = errors.get(i) ?? (last && FAILED_NODE.has(n.status) ? n.error : null);
      const t = times.get(i) || {};
      const started = t.started_at || (last ? n.attempt_started_at || (count === 1 ? n.started_at : null) : null);
      const ended = t.failed_at || (last ? n.completed_at : null);
      const took = started && ended ? fmtDuration(parseTime(ended) - parseTime(started)) : "";
      rows.push(
        el(
          "tr",
          { "data-testid": "attempt" },
          el("td", {}, `attempt ${i}`),
          el("td", {}, badge(outcome)),
          el("td", { class: "muted", "data-testid": "attempt-time" }, started ? `${fmtTime(started)} → ${ended ? fmtTime(ended).slice(11) : "…"}${took ? ` (${took})` : ""}` : "–"),
          el("td", { class: error ? "error wrap" : "muted" }, error || "–"),
        ),
      );
    }
    return rows;
  }

  function renderNodeDetail(panel, n) {
    if (!n) return;
    panel.hidden = false;
    const parts = [
      el("h2", {}, n.name || n.node_id, " ", badge(nodeState(n))),
      el(
        "p",
        { class: "muted", "data-testid": "node-times" },
        `started ${fmtTime(n.started_at)} · finished ${fmtTime(n.completed_at)} · ${fmtDuration(n.duration_ms ?? parseTime(n.completed_at) - parseTime(n.started_at))} · ${n.attempts || 0} attempt(s)`,
        n.usage ? ` · ${fmtInt(n.usage.input_tokens)} tokens in, ${fmtInt(n.usage.output_tokens)} out` : "",
      ),
    ];
    if (n.error) parts.push(el("h3", {}, "Error"), el("pre", { class: "error", "data-testid": "node-error" }, n.error));
    const attempts = attemptRows(n);
    if (attempts.length) {
      parts.push(el("h3", {}, "Attempts"), el("table", { class: "grid attempt-list", "data-testid": "attempts" }, el("tbody", {}, attempts)));
    }
    parts.push(el("h3", {}, "Prompt"), el("pre", { "data-testid": "node-prompt" }, n.prompt ?? "–"));
    parts.push(el("h3", {}, "Output"), el("pre", { "data-testid": "node-output" }, n.output === null || n.output === undefined || n.output === "" ? "–" : pretty(n.parsed_output ?? n.output)));
    replace(panel, ...parts);
  }

  // ---- batches -----------------------------------------------------------------------------------
  function recordSample(x) {
    let samples = samplesByExecution.get(x.id);
    if (!samples) {
      samples = [];
      samplesByExecution.set(x.id, samples);
      const start = parseTime(x.started_at);
      if (!Number.isNaN(start)) samples.push({ t: start, processed: 0, completed: 0, failed: 0 });
    }
    const p = x.progress || {};
    const t = x.completed_at ? parseTime(x.completed_at) : Date.now();
    const last = samples[samples.length - 1];
    const sample = { t, processed: p.processed_items || 0, completed: (p.processed_items || 0) - (p.failed_items || 0), failed: p.failed_items || 0 };
    if (last && last.t >= t) return samples;
    if (!last || last.processed !== sample.processed || last.failed !== sample.failed || ACTIVE.has(x.status)) samples.push(sample);
    if (samples.length > MAX_SAMPLES) samples.splice(1, samples.length - MAX_SAMPLES); // keep the anchor
    return samples;
  }

  function rateOf(samples) {
    // items per second over the last 30 s of samples
    if (samples.length < 2) return null;
    const last = samples[samples.length - 1];
    let first = samples[0];
    for (const s of samples) if (last.t - s.t <= 30000) {
      first = s;
      break;
    }
    const dt = (last.t - first.t) / 1000;
    return dt > 0 ? (last.processed - first.processed) / dt : null;
  }

  function renderBatchProgress(card, x) {
    const p = x.progress || {};
    const samples = recordSample(x);
    const rate = rateOf(samples);
    const remaining = Math.max(0, (p.total_items || 0) - (p.processed_items || 0));
    const eta = ACTIVE.has(x.status) && rate ? fmtDuration((remaining / rate) * 1000) : "–";
    const stat = (label, value, testid, cls) =>
      el("div", { class: `stat ${cls || ""}` }, el("div", { class: "value", "data-testid": testid }, value), el("div", { class: "label" }, label));
    replace(
      card,
      el("h2", {}, "Items"),
      progressBar(x, true),
      el(
        "div",
        { class: "stats" },
        stat("total", fmtInt(p.total_items), "total-items"),
        stat("processed", fmtInt(p.processed_items), "processed-items"),
        stat("completed", fmtInt((p.processed_items || 0) - (p.failed_items || 0)), "completed-items", "ok"),
        stat("failed", fmtInt(p.failed_items), "failed-items", p.failed_items ? "bad" : ""),
        stat("remaining", fmtInt(remaining), "remaining-items"),
        stat("items / s", rate === null ? "–" : rate.toFixed(1), "rate"),
        stat("ETA", eta, "eta"),
      ),
      countsChart(samples, p.total_items || 0),
    );
  }

  // Processed and failed counts over time, as sampled by this page (plus the run's start).
  function countsChart(samples, total) {
    const W = 1200;
    const H = 160;
    const pad = { l: 48, r: 8, t: 8, b: 22 };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "processed and failed items over time", "data-testid": "counts-chart" });
    if (samples.length < 2) {
      const text = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" });
      text.textContent = "collecting samples…";
      chart.append(text);
      return chart;
    }
    const t0 = samples[0].t;
    const t1 = samples[samples.length - 1].t;
    const top = Math.max(total, 1);
    const x = (t) => pad.l + ((t - t0) / Math.max(t1 - t0, 1)) * (W - pad.l - pad.r);
    const y = (v) => H - pad.b - (v / top) * (H - pad.t - pad.b);
    const line = (key, cls) => svg("polyline", { class: cls, points: samples.map((s) => `${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ") });
    chart.append(
      svg("line", { x1: pad.l, x2: W - pad.r, y1: y(0), y2: y(0), class: "grid" }),
      svg("line", { x1: pad.l, x2: W - pad.r, y1: y(top), y2: y(top), class: "grid" }),
      line("completed", "completed"),
      line("failed", "failed"),
    );
    const label = (tx, ty, text, anchor) => {
      const node = svg("text", { x: tx, y: ty, class: "axis", "text-anchor": anchor || "end" });
      node.textContent = text;
      return node;
    };
    chart.append(
      label(pad.l - 6, y(top) + 4, fmtInt(top)),
      label(pad.l - 6, y(0) + 4, "0"),
      label(pad.l, H - 4, fmtTime(new Date(t0).toISOString()), "start"),
      label(W - pad.r, H - 4, fmtTime(new Date(t1).toISOString())),
    );
    return el("figure", { class: "chartbox" }, chart, el("figcaption", { class: "muted small" }, el("span", { class: "key completed" }, "completed"), " ", el("span", { class: "key failed" }, "failed"), " — items over time (processed = completed + failed)"));
  }

  // The batch's items, one page at a time from the results API (never the whole set).
  function itemsTable(base, detail) {
    const body = el("tbody");
    const pages = pager(() => load(), ["‹ Previous", "Next ›"]);
    const note = el("p", { class: "muted small" });
    let execution = null;
    let lastLoad = 0;
    let loading = false;
    let settled = false;
    // Only the failed items: the results API filters (a page may come short, with a next page).
    const failedOnly = el("input", { type: "checkbox", "data-testid": "failed-only" });
    failedOnly.addEventListener("change", () => {
      pages.reset();
      if (execution) describe(execution);
      load();
    });
    function describe(x) {
      const p = x.progress || {};
      note.textContent = failedOnly.checked
        ? `The ${fmtInt(p.failed_items)} failed items of ${fmtInt(p.total_items)}, in dataset order, ${ITEMS_PAGE_SIZE} a page. Click an item for its nodes.`
        : `${fmtInt(p.processed_items)} of ${fmtInt(p.total_items)} items finished. In dataset order, ${ITEMS_PAGE_SIZE} a page` +
          (ACTIVE.has(x.status) ? "; the first page refreshes while the run goes on." : ".") +
          " Click an item for its nodes.";
    }
    const node = el(
      "section",
      { class: "card" },
      el("div", { class: "toolbar tight" }, el("h2", {}, "Results"), el("label", { class: "check" }, failedOnly, " failed items only")),
      note,
      el(
        "table",
        { class: "grid", "data-testid": "items" },
        el("thead", {}, el("tr", {}, ["Item", "Status", "Input", "Output / error"].map((h) => el("th", {}, h)))),
        body,
      ),
      pages.node,
    );

    async function load() {
      if (loading) return;
      loading = true;
      try {
        const status = failedOnly.checked ? "failed" : null;
        const page = await getJson(base + "/results", { limit: ITEMS_PAGE_SIZE, next_token: pages.token(), status });
        lastLoad = Date.now();
        body.replaceChildren();
        for (const item of page.items) {
          const failed = Boolean(item.error);
          body.append(
            el(
              "tr",
              { class: "clickable", "data-item": item.source_item_id, "data-testid": "item-row", onclick: () => showItem(detail, base, item) },
              el("td", { class: "mono" }, item.source_item_id),
              el("td", {}, badge(item.status || (failed ? "failed" : "completed"))),
              el("td", {}, shortText(item.input, 60)),
              el("td", { class: failed ? "error" : "" }, shortText(failed ? item.error : item.output, 90)),
            ),
          );
        }
        if (!page.items.length) {
          const none = status ? (page.next_token ? "No failed items in this stretch of the list: Next › reads on." : "No failed items.") : "No items.";
          body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, none)));
        }
        const p = execution && execution.progress ? execution.progress : {};
        const total = status ? p.failed_items : p.total_items;
        pages.update(page.next_token, page.items.length, total && !status ? Math.ceil(total / ITEMS_PAGE_SIZE) : undefined);
        if (execution && !ACTIVE.has(execution.status)) settled = true;
      } catch (err) {
        note.textContent = err.status === 404 ? "Results are not available for this run yet." : err.message;
        settled = !execution || !ACTIVE.has(execution.status);
      } finally {
        loading = false;
      }
    }

    return {
      node,
      refresh(x) {
        execution = x;
        describe(x);
        // Refresh the first page while the run goes on; other pages when asked.
        if (!lastLoad || (pages.index === 0 && Date.now() - lastLoad >= ITEMS_POLL_MS) || (!ACTIVE.has(x.status) && !settled)) load();
      },
      pending: () => !settled,
    };
  }

  async function showItem(panel, base, item) {
    panel.hidden = false;
    const parts = [
      el("h2", {}, `Item ${item.source_item_id} `, badge(item.status || (item.error ? "failed" : "completed"))),
      el("h3", {}, "Input"),
      el("pre", { "data-testid": "item-input" }, pretty(item.input) || "–"),
    ];
    if (item.error) parts.push(el("h3", {}, "Error"), el("pre", { class: "error", "data-testid": "item-error" }, item.error));
    parts.push(el("h3", {}, "Output"), el("pre", { "data-testid": "item-output" }, pretty(item.output) || "–"));
    const nodes = el("div", { "data-testid": "item-nodes" });
    parts.push(el("h3", {}, "Nodes"), nodes);
    replace(panel, ...parts);
    panel.scrollIntoView({ block: "nearest" });
    try {
      const answer = await getJson(`${base}/items/${encodeURIComponent(item.source_item_id)}`);
      const records = Array.isArray(answer.node_executions) ? answer.node_executions : Object.values(answer.node_executions || {});
      replace(
        nodes,
        records.map((n) =>
          el(
            "details",
            { class: "node", "data-testid": "item-node" },
            el("summary", {}, n.name || n.node_id, " ", badge(n.status), " ", fmtDuration(n.duration_ms), (n.attempts || 0) > 1 ? ` · ↻ ${n.attempts} attempts` : ""),
            n.error ? el("pre", { class: "error" }, n.error) : null,
            el("h4", {}, "Prompt"),
            el("pre", {}, n.prompt ?? "–"),
            el("h4", {}, "Output"),
            el("pre", {}, n.output === null || n.output === undefined || n.output === "" ? "–" : pretty(n.output)),
          ),
        ),
      );
    } catch (err) {
      replace(nodes, el("p", { class: "muted" }, `Per-node records: ${err.message}`));
    }
  }

  // ---- start a run -------------------------------------------------------------------------------
  const ESTIMATE_DEBOUNCE_MS = 400;

  function readFileBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function fmtMoney(value) {
    if (value === null || value === undefined) return "unknown";
    return value < 1 ? `$${Number(value).toFixed(4)}` : `$${Number(value).toFixed(2)}`;
  }

  async function showStart(view, workflowId, versionId) {
    const { workflow, versions } = await workflowAndVersions(workflowId);
    const wf = encodeURIComponent(workflowId);
    crumbs({ label: "Workflows", href: "#/" }, { label: workflow.name, href: `#/workflows/${wf}` }, { label: "Start a run" });
    const datasets = await getJson("/datasets", { limit: 200 });
    const field = (label, input, hint) => el("label", { class: "field" }, el("span", { class: "flabel" }, label), input, hint ? el("span", { class: "muted small" }, hint) : null);

    const version = el("select", { name: "version", "data-testid": "start-version" },
      versions.map((v) => el("option", { value: v.id, selected: versionId ? v.id === versionId : v.id === workflow.active_version_id }, versionName(v) + (v.id === workflow.active_version_id ? " (active)" : ""))));
    const modes = ["text", "file", "dataset"].map((m) => el("label", { class: "radio" }, el("input", { type: "radio", name: "mode", value: m, checked: m === "text", "data-testid": `mode-${m}` }), ` ${m}`));
    const text = el("textarea", { rows: 5, "data-testid": "start-text", placeholder: "The input text" });
    const file = el("input", { type: "file", "data-testid": "start-file" });
    const dataset = el("select", { "data-testid": "start-dataset" }, el("option", { value: "" }, "choose a dataset"), datasets.items.map((d) => el("option", { value: d.id }, d.name)));
    const datasetVersion = el("select", { "data-testid": "start-dataset-version" });
    const inputField = el("input", { value: "text", "data-testid": "start-input-field", size: 12 });
    const filter = el("input", { "data-testid": "start-filter", placeholder: "JMESPath, e.g. lang == 'fr'", size: 36 });
    const parallelism = el("input", { type: "number", min: 1, value: 5, "data-testid": "start-parallelism", size: 5 });
    const timeout = el("input", { type: "number", min: 1, placeholder: "none", "data-testid": "start-timeout", size: 8 });
    const estimate = el("section", { class: "estimate", "data-testid": "estimate", hidden: true });
    const submit = el("button", { type: "submit", class: "primary", "data-testid": "start-submit" }, "Start the run");
    const parts = {
      text: el("div", { class: "mode-part" }, field("Input", text)),
      file: el("div", { class: "mode-part" }, field("File", file, "sent as the run's input file (base64, up to the API's size limit)")),
      dataset: el("div", { class: "mode-part fields" },
        field("Dataset", dataset), field("Dataset version", datasetVersion), field("Input field", inputField),
        field("Filter", filter, "items it keeps run; empty: every item"), field("Parallelism", parallelism, "items at once")),
    };
    const mode = () => view.querySelector("input[name=mode]:checked").value;
    const showMode = () => {
      for (const [m, part] of Object.entries(parts)) part.hidden = m !== mode();
      estimate.hidden = mode() !== "dataset";
      scheduleEstimate();
    };

    async function loadDatasetVersions() {
      datasetVersion.replaceChildren();
      if (!dataset.value) return;
      const page = await getJson(`/datasets/${encodeURIComponent(dataset.value)}/versions`, { limit: 200 });
      const ready = page.items.filter((v) => v.status === "ready").sort((a, b) => b.number - a.number);
      for (const v of ready) datasetVersion.append(el("option", { value: v.id }, `v${v.number} · ${fmtInt(v.item_count)} items`));
      if (!ready.length) datasetVersion.append(el("option", { value: "" }, "no ready version"));
      if (ready.length && !inputField.dataset.touched && ready[0].fields.length && !ready[0].fields.includes(inputField.value)) inputField.value = ready[0].fields[0];
    }

    function batchBody() {
      const body = {
        input_mode: "batch",
        version_id: version.value || undefined,
        batch_config: {
          dataset_id: dataset.value,
          dataset_version_id: datasetVersion.value,
          input_field: inputField.value.trim() || "text",
          filter_query: filter.value.trim(),
          parallelism: Number(parallelism.value) || 1,
        },
      };
      if (timeout.value) body.timeout = Number(timeout.value);
      return body;
    }

    async function requestBody() {
      const common = { version_id: version.value || undefined };
      if (timeout.value) common.timeout = Number(timeout.value);
      if (mode() === "text") return { input_mode: "single", single_input: text.value, ...common };
      if (mode() === "file") {
        const chosen = file.files[0];
        if (!chosen) throw new Error("choose a file first.");
        return { input_mode: "single", file: { filename: chosen.name, content_type: chosen.type || "application/octet-stream", content_base64: await readFileBase64(chosen) }, ...common };
      }
      return batchBody();
    }

    // The estimate: POST /workflows/{id}/estimate with the body a batch start would send.
    let estimateTimer = null;
    let estimateSeq = 0;
    function scheduleEstimate() {
      clearTimeout(estimateTimer);
      if (mode() !== "dataset") return;
      estimateTimer = setTimeout(runEstimate, ESTIMATE_DEBOUNCE_MS);
    }
    async function runEstimate() {
      const seq = (estimateSeq += 1);
      if (!dataset.value || !datasetVersion.value) {
        replace(estimate, el("h3", {}, "Estimate"), el("p", { class: "muted" }, "Choose a dataset and a version for an estimate."));
        return;
      }
      replace(estimate, el("h3", {}, "Estimate"), el("p", { class: "muted" }, "estimating…"));
      try {
        const body = batchBody();
        const e = await postJson(`/workflows/${wf}/estimate`, body);
        if (seq !== estimateSeq) return;
        const cell = (label, value, testid) => el("div", { class: "stat" }, el("div", { class: "value", "data-testid": testid }, value), el("div", { class: "label" }, label));
        const caveats = [];
        if (e.items_exact === false) caveats.push(`items extrapolated from a sample: the first ${fmtInt(e.items_read)} read, until the ${e.read_stopped_by} bound`);
        if (e.sample_failures) caveats.push(`${fmtInt(e.sample_failures)} of ${fmtInt(e.sample_size)} sampled items would fail`);
        replace(
          estimate,
          el("h3", {}, "Estimate ", el("span", { class: "muted small" }, "before it starts: from the filter, the templates' sizes on a sample and the price table")),
          el("div", { class: "stats" },
            cell("items", (e.items_exact === false ? "≈ " : "") + fmtInt(e.items), "estimate-items"),
            cell("model calls", fmtInt(e.model_calls), "estimate-calls"),
            cell("tokens in / out", `${fmtInt(e.input_tokens)} / ${fmtInt(e.output_tokens)}`, "estimate-tokens"),
            cell("model cost", fmtMoney(e.model_cost), "estimate-model-cost"),
            cell("AWS cost", fmtMoney(e.aws_cost), "estimate-aws-cost"),
            cell(`time at parallelism ${fmtInt(body.batch_config.parallelism)}`, fmtDuration((e.duration_seconds || 0) * 1000), "estimate-duration"),
          ),
          caveats.length ? el("p", { class: "muted small caveats", "data-testid": "estimate-caveats" }, caveats.join(" · ")) : null,
        );
      } catch (err) {
        if (seq !== estimateSeq) return;
        // An API without the endpoint: the router's route_not_found, or API Gateway's bare 404.
        const missing = (err.status === 404 && ["route_not_found", "error"].includes(err.code)) || err.status === 405;
        replace(estimate, el("h3", {}, "Estimate"), el("p", { class: "muted", "data-testid": "estimate-error" },
          missing ? "No estimate: this API does not answer POST /workflows/{id}/estimate." : `No estimate: ${err.message}`));
      }
    }

    const form = el("form", { class: "card startform", "data-testid": "start-form" },
      el("div", { class: "fields" }, field("Version", version), el("div", { class: "field" }, el("span", { class: "flabel" }, "Input"), el("div", { class: "radios" }, modes)), field("Timeout (s)", timeout)),
      parts.text, parts.file, parts.dataset, estimate,
      el("div", { class: "actions" }, submit));
    form.addEventListener("change", (event) => {
      if (event.target === dataset) loadDatasetVersions().then(scheduleEstimate, (err) => banner(err.message));
      else if (event.target.name === "mode") showMode();
      else scheduleEstimate();
    });
    form.addEventListener("input", (event) => {
      if (event.target === inputField) inputField.dataset.touched = "1";
      if ([inputField, filter, parallelism].includes(event.target)) scheduleEstimate();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      try {
        const answer = await postJson(`/workflows/${wf}/executions`, await requestBody());
        location.hash = `#/workflows/${wf}/executions/${encodeURIComponent(answer.id)}`;
      } catch (err) {
        banner(err.message);
      } finally {
        submit.disabled = false;
      }
    });
    replace(view, el("h1", {}, `Start a run of ${workflow.name}`), form);
    showMode();
  }

  // ---- routing -----------------------------------------------------------------------------------
  async function route() {
    generation += 1;
    banner("");
    const view = $("view");
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    try {
      if (parts[0] === "workflows" && parts[1] && parts[2] === "executions" && parts[3]) {
        await showExecution(view, parts[1], parts[3]);
      } else if (parts[0] === "workflows" && parts[1] && parts[2] === "versions" && parts[3]) {
        await showVersion(view, parts[1], parts[3]);
      } else if (parts[0] === "workflows" && parts[1] && parts[2] === "start") {
        await showStart(view, parts[1], parts[3] || null);
      } else if (parts[0] === "workflows" && parts[1]) {
        await showWorkflow(view, parts[1]);
      } else {
        showWorkflows(view);
      }
    } catch (err) {
      banner(err.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupKeyForm();
    loadKey();
    window.addEventListener("hashchange", () => {
      if (location.hash.startsWith("#key=")) loadKey();
      route();
    });
    route();
  });
})();
