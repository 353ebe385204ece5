// relayflow dashboard: vanilla JS, no build step, no third-party code. It reads the same JSON API
// as the client and the CLI, with the same API key, and never loads a batch's items all at once:
// counts come from the execution's progress, items from the paged results API.
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
    for (const child of children.flat()) {
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

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    const time = d.toLocaleTimeString("en-GB", { hour12: false });
    return today ? time : `${d.toISOString().slice(0, 10)} ${time}`;
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

  async function api(method, path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") query.set(k, v);
    const url = API_BASE + path + (query.toString() ? `?${query}` : "");
    const headers = { accept: "application/json" };
    if (apiKey) headers["x-api-key"] = apiKey;
    let response;
    try {
      response = await fetch(url, { method, headers, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, "network", `the API did not answer (${err.message}).`);
    }
    if (!response.ok) {
      let body = {};
      try {
        body = await response.json();
      } catch (_) {
        /* not JSON */
      }
      let message = body.message || response.statusText || `HTTP ${response.status}`;
      if (response.status === 401 || response.status === 403) {
        showKeyForm();
        message = `The API refused the request (${message}): enter a valid API key.`;
      }
      throw new ApiError(response.status, body.code || "error", message);
    }
    return response;
  }

  const getJson = async (path, params) => (await api("GET", path, params)).json();
  const postJson = async (path) => (await api("POST", path)).json();

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

  function progressOf(x) {
    const p = x.progress || {};
    if (x.input_mode === "batch") {
      const total = p.total_items || 0;
      const done = p.processed_items || 0;
      return { done, total, failed: p.failed_items || 0, unit: "items" };
    }
    const total = p.total_nodes || 0;
    let done;
    if (x.node_executions && Object.keys(x.node_executions).length) {
      done = Object.values(x.node_executions).filter((n) => TERMINAL_NODE.has(n.status)).length;
    } else {
      done = x.status === "completed" ? total : Math.min(p.current_node_idx || 0, total);
    }
    return { done, total, failed: 0, unit: "nodes" };
  }

  function progressBar(x, big) {
    const { done, total, failed, unit } = progressOf(x);
    const ok = total ? ((done - failed) / total) * 100 : x.status === "completed" ? 100 : 0;
    const bad = total ? (failed / total) * 100 : 0;
    return el(
      "div",
      { class: `bar ${big ? "big" : ""} ${ACTIVE.has(x.status) ? "live" : ""}`, "data-testid": "progress" },
      el("div", { class: "fill ok", css: { width: `${ok.toFixed(2)}%` } }),
      el("div", { class: "fill bad", css: { width: `${bad.toFixed(2)}%` } }),
      el(
        "span",
        { class: "bar-label" },
        `${fmtInt(done)} / ${fmtInt(total)} ${unit}` + (failed ? ` · ${fmtInt(failed)} failed` : ""),
      ),
    );
  }

  async function showExecutions(view, workflowId) {
    const workflow = await getJson(`/workflows/${encodeURIComponent(workflowId)}`);
    crumbs({ label: "Workflows", href: "#/" }, { label: workflow.name });
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
    replace(
      view,
      el("h1", {}, workflow.name, " ", el("span", { class: "muted small mono" }, workflow.id)),
      workflow.description ? el("p", { class: "muted" }, workflow.description) : null,
      el("div", { class: "toolbar" }, el("h2", {}, "Executions"), filter),
      el(
        "table",
        { class: "grid", "data-testid": "executions" },
        el(
          "thead",
          {},
          el("tr", {}, ["#", "Status", "Mode", "Progress", "Created", "Duration", "Id"].map((h) => el("th", {}, h))),
        ),
        body,
      ),
      pages.node,
    );
    async function load() {
      const page = await getJson(`/workflows/${encodeURIComponent(workflowId)}/executions`, {
        limit: PAGE_SIZE,
        status: filter.value,
        next_token: pages.token(),
      });
      body.replaceChildren();
      for (const x of page.items) {
        const href = `#/workflows/${encodeURIComponent(workflowId)}/executions/${encodeURIComponent(x.id)}`;
        body.append(
          el(
            "tr",
            { class: "clickable", "data-execution": x.id, onclick: () => (location.hash = href) },
            el("td", {}, el("a", { href }, `#${x.number}`)),
            el("td", {}, badge(x.status)),
            el("td", {}, x.input_mode),
            el("td", { class: "wide" }, progressBar(x, false)),
            el("td", {}, fmtTime(x.created_at)),
            el("td", {}, fmtDuration(runDuration(x))),
            el("td", { class: "mono muted" }, x.id.slice(0, 8)),
          ),
        );
      }
      if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No executions.")));
      pages.update(page.next_token, page.items.length);
    }
    poll(LIST_POLL_MS, load);
  }

  // ---- one execution -----------------------------------------------------------------------------
  async function showExecution(view, workflowId, executionId) {
    const base = `/workflows/${encodeURIComponent(workflowId)}/executions/${encodeURIComponent(executionId)}`;
    const workflow = await getJson(`/workflows/${encodeURIComponent(workflowId)}`);
    const header = el("div", { class: "xheader" });
    const summary = el("dl", { class: "summary" });
    const progress = el("section", { class: "card" });
    const detail = el("section", { class: "card", "data-testid": "detail", hidden: true });
    const body = el("div");
    replace(view, header, progress, summary, body, detail);
    let first = true;
    let selectedNode = null;
    let itemsPanel = null;

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
      }
      renderHeader(header, x, base);
      renderSummary(summary, x, base);
      if (x.input_mode === "batch") {
        renderBatchProgress(progress, x);
        if (!itemsPanel) {
          itemsPanel = itemsTable(base, detail);
          body.replaceChildren(itemsPanel.node);
        }
        itemsPanel.refresh(x);
      } else {
        replace(progress, el("h2", {}, "Progress"), progressBar(x, true));
        renderTimeline(body, x, (nodeId) => {
          selectedNode = nodeId;
          renderNodeDetail(detail, x.node_executions[nodeId]);
        }, selectedNode);
        if (selectedNode && x.node_executions[selectedNode]) renderNodeDetail(detail, x.node_executions[selectedNode]);
      }
      return ACTIVE.has(x.status) || (itemsPanel !== null && itemsPanel.pending());
    });
  }

  function renderHeader(header, x, base) {
    const actions = el("div", { class: "actions" });
    if (ACTIVE.has(x.status)) {
      actions.append(
        el("button", { type: "button", class: "danger", "data-testid": "cancel", onclick: () => act(base + "/cancel", "Cancel this run?") }, "Cancel"),
      );
    }
    actions.append(
      el("button", { type: "button", "data-testid": "rerun", onclick: () => act(base + "/rerun", "Start a new run with the same input?", true) }, "Re-run"),
    );
    replace(
      header,
      el("h1", {}, `Execution #${x.number} `, badge(x.status), el("span", { class: "muted small mono" }, " ", x.id)),
      actions,
    );
  }

  async function act(path, question, navigate) {
    if (!window.confirm(question)) return;
    try {
      const answer = await postJson(path);
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
    if (x.rerun_of) rows.push(["Re-run of", x.rerun_of]);
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

  function renderNodeDetail(panel, n) {
    if (!n) return;
    panel.hidden = false;
    const parts = [
      el("h2", {}, n.name || n.node_id, " ", badge(n.status)),
      el(
        "p",
        { class: "muted" },
        `started ${fmtTime(n.started_at)} · finished ${fmtTime(n.completed_at)} · ${fmtDuration(n.duration_ms)} · ${n.attempts || 0} attempt(s)`,
        n.usage ? ` · ${fmtInt(n.usage.input_tokens)} tokens in, ${fmtInt(n.usage.output_tokens)} out` : "",
      ),
    ];
    if (n.error) parts.push(el("h3", {}, "Error"), el("pre", { class: "error", "data-testid": "node-error" }, n.error));
    if ((n.attempt_errors || []).length) {
      parts.push(el("h3", {}, "Attempts"), el("ol", { class: "attempts" }, n.attempt_errors.map((e) => el("li", {}, e))));
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
      if (!Number.isNaN(start)) samples.push({ t: start, processed: 0, failed: 0 });
    }
    const p = x.progress || {};
    const t = x.completed_at ? parseTime(x.completed_at) : Date.now();
    const last = samples[samples.length - 1];
    const sample = { t, processed: p.processed_items || 0, failed: p.failed_items || 0 };
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
        stat("processed", fmtInt(p.processed_items), "processed-items", "ok"),
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
      line("processed", "processed"),
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
    return el("figure", { class: "chartbox" }, chart, el("figcaption", { class: "muted small" }, el("span", { class: "key processed" }, "processed"), " ", el("span", { class: "key failed" }, "failed"), " — counts over time"));
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
    const node = el(
      "section",
      { class: "card" },
      el("h2", {}, "Results"),
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
        const page = await getJson(base + "/results", { limit: ITEMS_PAGE_SIZE, next_token: pages.token() });
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
        if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No items.")));
        const total = execution && execution.progress ? execution.progress.total_items : 0;
        pages.update(page.next_token, page.items.length, total ? Math.ceil(total / ITEMS_PAGE_SIZE) : undefined);
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
        const p = x.progress || {};
        note.textContent =
          `${fmtInt(p.processed_items)} of ${fmtInt(p.total_items)} items finished. In dataset order, ${ITEMS_PAGE_SIZE} a page` +
          (ACTIVE.has(x.status) ? "; the first page refreshes while the run goes on." : ".") +
          " Click an item for its nodes.";
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
            el("pre", {}, n.output === null || n.output === undefined ? "–" : pretty(n.output)),
          ),
        ),
      );
    } catch (err) {
      replace(nodes, el("p", { class: "muted" }, `Per-node records: ${err.message}`));
    }
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
      } else if (parts[0] === "workflows" && parts[1]) {
        await showExecutions(view, parts[1]);
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
