// circushttpd's page script: keeps the page current over /ws and sends the buttons' POSTs.
// Everything it adds to the page is built with textContent: names, commands and output are
// text, never markup.
(function () {
  "use strict";

  const body = document.body;
  const PAGE = body.dataset.page;
  const CSRF = body.dataset.csrf;
  const READONLY = body.dataset.readonly === "true";
  const PAGE_ENDPOINT = body.dataset.endpoint || "0";
  const PAGE_WATCHER = body.dataset.watcherName || "";
  const HISTORY = 300;
  const MAX_LOG_LINES = 5000;

  // -- small helpers ----------------------------------------------------------------------

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtCpu(c) { return c === null || c === undefined ? "" : c.toFixed(1) + " %"; }
  function fmtMem(b) { return b === null || b === undefined ? "" : (b / 1048576).toFixed(1) + " MB"; }
  function fmtUptime(s) {
    if (s === null || s === undefined) return "";
    s = Math.floor(s);
    if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return s + "s";
  }
  function fmtTime(t) {
    const d = new Date(t * 1000);
    return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function notice(text, isError) {
    const n = document.getElementById("notice");
    if (!n) return;
    n.textContent = text;
    n.className = isError ? "notice error" : "notice";
    n.hidden = !text;
  }

  function childrenBy(parent, key) {
    const map = new Map();
    for (const node of Array.from(parent.children)) map.set(node.dataset[key], node);
    return map;
  }

  function placeAt(parent, node, index) {
    if (parent.children[index] !== node) parent.insertBefore(node, parent.children[index] || null);
  }

  async function post(url, data) {
    try {
      const response = await fetch(url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
        body: JSON.stringify(data || {}),
      });
      const reply = await response.json().catch(() => ({ status: "error", reason: response.statusText }));
      if (reply.status !== "ok") notice(reply.reason || "refused", true);
      else notice("");
      return reply;
    } catch (err) {
      notice("circushttpd does not answer: " + err, true);
      return { status: "error" };
    }
  }

  function endpointOf(node) {
    const holder = node.closest("[data-endpoint]");
    return holder ? holder.dataset.endpoint : PAGE_ENDPOINT;
  }
  function watcherOf(node) {
    const holder = node.closest("[data-watcher]");
    return holder ? holder.dataset.watcher : PAGE_WATCHER;
  }
  function watcherUrl(name, endpoint, rest) {
    return "/api/watchers/" + encodeURIComponent(name) + (rest || "") + "?endpoint=" + endpoint;
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button");
    if (!button || READONLY) return;
    const endpoint = endpointOf(button);
    if (button.dataset.action) {
      const name = watcherOf(button);
      const action = button.dataset.action;
      if (action === "rm" && !window.confirm("Remove the watcher " + name + "?")) return;
      post(watcherUrl(name, endpoint, "/" + action)).then((reply) => {
        if (action === "rm" && reply.status === "ok") window.location.href = "/";
      });
    } else if (button.dataset.global) {
      if (button.dataset.global === "stop" && !window.confirm("Stop every watcher of this circusd?")) return;
      post("/api/" + button.dataset.global + "?endpoint=" + endpoint);
    } else if (button.dataset.kill) {
      post(watcherUrl(PAGE_WATCHER, PAGE_ENDPOINT, "/processes/" + button.dataset.kill + "/kill"));
    }
  });

  function actionButtons() {
    const span = el("span", "actions");
    if (READONLY) return span;
    for (const [action, label] of [["start", "start"], ["stop", "stop"], ["restart", "restart"],
      ["reload", "reload"], ["decr", "−"], ["incr", "+"]]) {
      const b = el("button", null, label);
      b.type = "button";
      b.dataset.action = action;
      span.appendChild(b);
    }
    return span;
  }

  // -- charts -----------------------------------------------------------------------------

  const charts = new Map(); // "endpoint/name" -> {plot, data}

  function chartFor(endpoint, name, holder, big) {
    const key = endpoint + "/" + name;
    let chart = charts.get(key);
    if (chart && chart.holder === holder) return chart;
    if (chart) chart.plot.destroy();
    if (typeof window.uPlot !== "function" || !holder) return null;
    const data = chart ? chart.data : [[], [], []];
    const opts = {
      width: big ? 640 : 200, height: big ? 180 : 40, padding: big ? undefined : [4, 0, 4, 0],
      legend: { show: !!big }, cursor: { show: !!big },
      scales: { x: { time: true }, cpu: { auto: true, range: (u, min, max) => [0, Math.max(max * 1.25, 1)] },
        mb: { auto: true, range: (u, min, max) => [0, Math.max(max * 1.25, 1)] } },
      series: [{}, { label: "CPU %", stroke: "#c0392b", scale: "cpu", width: 1.5, points: { show: !!big } },
        { label: "memory MB", stroke: "#2471a3", scale: "mb", width: 1.5, points: { show: !!big } }],
      axes: big ? [{}, { scale: "cpu", label: "CPU %" }, { scale: "mb", side: 1, label: "MB", grid: { show: false } }]
        : [{ show: false }, { show: false, scale: "cpu" }, { show: false, scale: "mb" }],
    };
    holder.textContent = "";
    chart = { plot: new window.uPlot(opts, data, holder), data: data, holder: holder };
    charts.set(key, chart);
    return chart;
  }

  function addPoint(endpoint, name, time, cpu, mb) {
    const chart = charts.get(endpoint + "/" + name);
    if (!chart) return;
    const d = chart.data;
    d[0].push(time); d[1].push(cpu === null ? null : cpu); d[2].push(mb);
    if (d[0].length > HISTORY) { d[0].shift(); d[1].shift(); d[2].shift(); }
    chart.plot.setData(d);
    chart.holder.dataset.points = String(d[0].length);
  }

  async function loadHistory(endpoint) {
    try {
      const reply = await (await fetch("/api/history?endpoint=" + endpoint, { credentials: "same-origin" })).json();
      for (const [name, points] of Object.entries(reply.history || {})) {
        const chart = charts.get(endpoint + "/" + name);
        if (!chart || chart.data[0].length) continue;
        for (const [t, cpu, mb] of points) { chart.data[0].push(t); chart.data[1].push(cpu); chart.data[2].push(mb); }
        chart.plot.setData(chart.data);
        chart.holder.dataset.points = String(chart.data[0].length);
      }
    } catch (err) { /* the charts fill as figures come */ }
  }

  // -- dashboard --------------------------------------------------------------------------

  function sectionFor(index) {
    for (const s of document.querySelectorAll("section.endpoint")) if (s.dataset.endpoint === String(index)) return s;
    return null;
  }

  function setConnection(section, snap) {
    const conn = section.querySelector(".conn");
    if (conn) {
      conn.textContent = snap.connected ? "connected" : "disconnected";
      conn.className = "conn " + (snap.connected ? "up" : "down");
    }
    const error = section.querySelector(".conn-error");
    if (error) error.textContent = snap.error || "";
  }

  function setHealth(cell, health) {
    cell.textContent = "";
    cell.appendChild(el("span", "health-" + health, health));
  }

  function makeWatcherRow(index, w) {
    const tr = el("tr", "watcher");
    tr.dataset.watcher = w.name;
    const name = el("td", "name");
    const link = el("a", null, w.name);
    link.href = "/watchers/" + encodeURIComponent(w.name) + "?endpoint=" + index;
    name.appendChild(link);
    tr.appendChild(name);
    for (const cls of ["health", "procs", "restarts", "cpu", "mem", "chart"]) tr.appendChild(el("td", cls));
    const actions = el("td");
    actions.appendChild(actionButtons());
    tr.appendChild(actions);
    return tr;
  }

  function updateWatcherCells(node, w) {
    setHealth(node.querySelector(".health"), w.health);
    node.querySelector(".procs").textContent = w.running + "/" + w.numprocesses;
    node.querySelector(".restarts").textContent = w.restarts;
    node.querySelector(".cpu").textContent = fmtCpu(w.cpu);
    node.querySelector(".mem").textContent = fmtMem(w.mem);
  }

  function renderDashboard(snap) {
    const section = sectionFor(snap.index);
    if (!section) return;
    setConnection(section, snap);
    const tbody = section.querySelector("table.watchers tbody");
    const rows = childrenBy(tbody, "watcher");
    snap.watchers.forEach((w, i) => {
      let tr = rows.get(w.name);
      if (tr) rows.delete(w.name); else tr = makeWatcherRow(snap.index, w);
      updateWatcherCells(tr, w);
      placeAt(tbody, tr, i);
      chartFor(snap.index, w.name, tr.querySelector(".chart"), false);
    });
    for (const [name, tr] of rows) {
      tr.remove();
      const chart = charts.get(snap.index + "/" + name);
      if (chart) { chart.plot.destroy(); charts.delete(snap.index + "/" + name); }
    }
  }

  // -- watcher page -----------------------------------------------------------------------

  const uptimes = new Map(); // pid -> [uptime at receipt, performance.now() at receipt]

  function makeProcessRow(pid) {
    const tr = el("tr", "process");
    tr.dataset.pid = String(pid);
    for (const cls of ["pid", "wid", "uptime", "cpu", "mem", "restarts"]) tr.appendChild(el("td", cls));
    const cell = el("td");
    if (!READONLY) {
      const kill = el("button", null, "kill");
      kill.type = "button";
      kill.dataset.kill = String(pid);
      cell.appendChild(kill);
    }
    tr.appendChild(cell);
    return tr;
  }

  function renderWatcher(snap) {
    if (String(snap.index) !== PAGE_ENDPOINT) return;
    const w = snap.watchers.find((x) => x.name === PAGE_WATCHER);
    const summary = document.querySelector(".watcher.summary");
    if (!summary) return;
    if (!w) {
      setHealth(summary.querySelector(".health"), snap.connected ? "removed" : "unknown");
      return;
    }
    updateWatcherCells(summary, w);
    chartFor(snap.index, w.name, summary.querySelector(".chart"), true);
    const tbody = document.querySelector("table.processes tbody");
    const rows = childrenBy(tbody, "pid");
    const now = performance.now();
    (w.processes || []).forEach((p, i) => {
      let tr = rows.get(String(p.pid));
      if (tr) rows.delete(String(p.pid)); else tr = makeProcessRow(p.pid);
      tr.querySelector(".pid").textContent = p.pid;
      tr.querySelector(".wid").textContent = p.wid;
      tr.querySelector(".uptime").textContent = fmtUptime(p.uptime);
      tr.querySelector(".restarts").textContent = p.restarts;
      if (p.cpu !== null) tr.querySelector(".cpu").textContent = fmtCpu(p.cpu);
      if (p.mem !== null) tr.querySelector(".mem").textContent = fmtMem(p.mem);
      uptimes.set(String(p.pid), [p.uptime || 0, now]);
      placeAt(tbody, tr, i);
    });
    for (const [pid, tr] of rows) { tr.remove(); uptimes.delete(pid); }
  }

  function tickUptimes() {
    const now = performance.now();
    for (const tr of document.querySelectorAll("table.processes tr.process")) {
      const u = uptimes.get(tr.dataset.pid);
      if (u) tr.querySelector(".uptime").textContent = fmtUptime(u[0] + (now - u[1]) / 1000);
    }
  }

  function renderProcessFigures(processes) {
    for (const tr of document.querySelectorAll("table.processes tr.process")) {
      const f = processes[tr.dataset.pid];
      if (!f) continue;
      tr.querySelector(".cpu").textContent = fmtCpu(f[0]);
      tr.querySelector(".mem").textContent = fmtMem(f[1]);
    }
  }

  // the log pane: follows as tail -f does; pause holds new lines back, search filters
  const log = {
    pane: document.getElementById("log"), paused: false, held: [], partial: new Map(),
    search: "", stream: "",
    matches(row) {
      return (!this.stream || row.dataset.stream === this.stream) &&
        (!this.search || row.textContent.toLowerCase().includes(this.search));
    },
    add(stream, pid, text) {
      const row = el("div", "line " + stream, text);
      row.dataset.stream = stream;
      row.dataset.pid = String(pid);
      row.title = stream + " of " + pid;
      if (this.paused) { this.held.push(row); this.state(); return; }
      this.append(row);
    },
    append(row) {
      const pane = this.pane;
      const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
      row.hidden = !this.matches(row);
      pane.appendChild(row);
      while (pane.children.length > MAX_LOG_LINES) pane.firstChild.remove();
      if (atEnd || !this.userScrolled) pane.scrollTop = pane.scrollHeight;
    },
    chunk(c) {
      const key = c.pid + "/" + c.stream;
      const parts = ((this.partial.get(key) || "") + c.data).split("\n");
      this.partial.set(key, parts.pop());
      for (const line of parts) this.add(c.stream, c.pid, line);
    },
    filter() {
      for (const row of this.pane.children) row.hidden = !this.matches(row);
    },
    state() {
      const s = document.getElementById("log-state");
      if (s) s.textContent = this.paused ? "paused, " + this.held.length + " new lines held" : "following";
    },
  };

  function setUpLogPane() {
    if (!log.pane) return;
    const pause = document.getElementById("log-pause");
    pause.addEventListener("click", () => {
      log.paused = !log.paused;
      pause.textContent = log.paused ? "resume" : "pause";
      if (!log.paused) { for (const row of log.held) log.append(row); log.held = []; }
      log.state();
    });
    document.getElementById("log-search").addEventListener("input", (ev) => {
      log.search = ev.target.value.toLowerCase(); log.filter();
    });
    document.getElementById("log-stream").addEventListener("change", (ev) => {
      log.stream = ev.target.value; log.filter();
    });
    log.pane.addEventListener("wheel", () => { log.userScrolled = true; });
    log.state();
  }

  function setUpOptions() {
    const form = document.getElementById("options");
    if (!form || READONLY) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const changed = {};
      for (const input of form.querySelectorAll("input[name]")) {
        if (input.value !== input.dataset.initial) changed[input.name] = input.value;
      }
      const state = document.getElementById("options-state");
      if (!Object.keys(changed).length) { state.textContent = "nothing changed"; return; }
      const reply = await post(watcherUrl(PAGE_WATCHER, PAGE_ENDPOINT, "/set"), { options: changed });
      if (reply.status === "ok") {
        for (const input of form.querySelectorAll("input[name]")) {
          if (input.name in changed) input.dataset.initial = input.value;
        }
        state.textContent = "saved: " + Object.keys(changed).join(", ");
      } else {
        state.textContent = "";
      }
    });
  }

  // -- events page ------------------------------------------------------------------------

  const eventFilter = { text: "", endpoint: "" };

  function eventMatches(row) {
    return (!eventFilter.endpoint || row.dataset.endpoint === eventFilter.endpoint) &&
      (!eventFilter.text || row.textContent.toLowerCase().includes(eventFilter.text));
  }

  function addEvent(msg) {
    const tbody = document.getElementById("events");
    if (!tbody) return;
    const tr = el("tr", "event");
    tr.dataset.endpoint = String(msg.endpoint);
    tr.dataset.topic = msg.topic;
    tr.appendChild(el("td", "time", fmtTime(msg.time)));
    tr.appendChild(el("td", null, (hello.endpoints || [])[msg.endpoint] || msg.endpoint));
    tr.appendChild(el("td", "topic", msg.topic));
    tr.appendChild(el("td", "payload", JSON.stringify(msg.payload)));
    tr.hidden = !eventMatches(tr);
    tbody.insertBefore(tr, tbody.firstChild);
    while (tbody.children.length > 1000) tbody.lastChild.remove();
  }

  function setUpEvents() {
    for (const cell of document.querySelectorAll("td.time[data-time]")) cell.textContent = fmtTime(parseFloat(cell.dataset.time));
    const filter = document.getElementById("event-filter");
    const refilter = () => { for (const row of document.querySelectorAll("#events tr")) row.hidden = !eventMatches(row); };
    if (filter) filter.addEventListener("input", () => { eventFilter.text = filter.value.toLowerCase(); refilter(); });
    const select = document.getElementById("event-endpoint");
    if (select) select.addEventListener("change", () => { eventFilter.endpoint = select.value; refilter(); });
  }

  // -- the WebSocket ----------------------------------------------------------------------

  let hello = {};
  let retry = 500;

  function setLive(up, text) {
    const live = document.getElementById("live");
    if (!live) return;
    live.textContent = text;
    live.className = "live " + (up ? "up" : "down");
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.onopen = () => {
      retry = 500;
      setLive(true, "live");
      ws.send(JSON.stringify({ type: "view", page: PAGE, endpoint: PAGE_ENDPOINT, watcher: PAGE_WATCHER }));
      if (PAGE === "watcher" && log.pane) {
        log.pane.textContent = ""; log.partial.clear(); log.held = [];
        ws.send(JSON.stringify({ type: "follow", endpoint: PAGE_ENDPOINT, watcher: PAGE_WATCHER, lines: 200 }));
      }
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      switch (msg.type) {
        case "hello": hello = msg; break;
        case "status":
          if (PAGE === "dashboard") renderDashboard(msg.endpoint);
          else if (PAGE === "watcher") renderWatcher(msg.endpoint);
          break;
        case "figures":
          for (const [name, point] of Object.entries(msg.watchers)) addPoint(msg.endpoint, name, msg.time, point[0], point[1]);
          if (msg.processes) renderProcessFigures(msg.processes);
          break;
        case "event": if (PAGE === "events") addEvent(msg); break;
        case "lines": for (const l of msg.lines) log.add(l.stream, l.pid, l.line); break;
        case "output": if (log.pane) log.chunk(msg); break;
        case "reply": if (msg.status !== "ok") notice(msg.reason, true); break;
        case "error": notice(msg.reason, true); break;
      }
    };
    ws.onclose = () => {
      setLive(false, "disconnected, reconnecting…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  if (PAGE === "dashboard") {
    for (const section of document.querySelectorAll("section.endpoint")) {
      for (const tr of section.querySelectorAll("tr.watcher")) chartFor(section.dataset.endpoint, tr.dataset.watcher, tr.querySelector(".chart"), false);
      loadHistory(section.dataset.endpoint);
    }
  } else if (PAGE === "watcher") {
    const summary = document.querySelector(".watcher.summary");
    if (summary) chartFor(PAGE_ENDPOINT, PAGE_WATCHER, summary.querySelector(".chart"), true);
    loadHistory(PAGE_ENDPOINT);
    setUpLogPane();
    setUpOptions();
    setInterval(tickUptimes, 1000);
  } else if (PAGE === "events") {
    setUpEvents();
  }
  if (PAGE !== "login") connect();
})();
