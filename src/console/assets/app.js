// fanout-bridge DLQ console: one small page, no framework, no build step.
// Every piece of data from the DLQ reaches the page through textContent
// (never innerHTML): a body holding <script> shows as text and runs nothing.
"use strict";

(function () {
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;
  const PAGE = 50;
  const main = document.getElementById("main");
  const statusBox = document.getElementById("status");
  let lastGroups = null; // the latest /api/groups answer
  let history = [];
  let depthTimer = null;

  // === helpers ===

  // el("p", {class: "x"}, "text", child, ...): strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  function say(text, kind) {
    statusBox.className = "status" + (kind ? " " + kind : "");
    statusBox.textContent = text;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {}, credentials: "same-origin" }, options || {});
    if (opts.body !== undefined) {
      opts.method = opts.method || "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(opts.body);
    }
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
    const r = await fetch(path, opts);
    if (r.status === 401) {
      window.location.assign("/login");
      throw new ApiError(401, "log in first");
    }
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok) {
      let msg = (data && data.error) || r.status + " " + r.statusText;
      if (r.status === 409 && !(data && data.matched !== undefined)) msg = "Busy: " + msg;
      const err = new ApiError(r.status, msg);
      err.data = data;
      throw err;
    }
    return data;
  }

  function failed(e) {
    say(e.message, e.status === 409 ? "busy" : "error");
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function when(t) {
    return t ? t.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
  }

  function header(rec, name) {
    const v = rec.headers ? rec.headers[name] : undefined;
    if (v === undefined || v === null) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
      else if (v !== undefined && v !== null && v !== "") u.append(k, v);
    }
    return u.toString();
  }

  function table(caption, heads, rows, id) {
    const thead = el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { scope: "col" }, h))));
    return el(
      "div",
      { class: "table-wrap" },
      el("table", { id: id }, el("caption", {}, caption), thead, el("tbody", {}, ...rows))
    );
  }

  // === confirmation ===

  const dialog = document.getElementById("confirm");
  function confirmAction(title, text, extra, okLabel) {
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    const box = document.getElementById("confirm-extra");
    box.replaceChildren(...(extra ? [extra] : []));
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    ok.textContent = okLabel;
    return new Promise((resolve) => {
      function done(value) {
        ok.removeEventListener("click", yes);
        cancel.removeEventListener("click", no);
        dialog.removeEventListener("cancel", no);
        if (dialog.open) dialog.close();
        resolve(value);
      }
      function yes() {
        done(true);
      }
      function no() {
        done(false);
      }
      ok.addEventListener("click", yes);
      cancel.addEventListener("click", no);
      dialog.addEventListener("cancel", no);
      dialog.showModal();
      cancel.focus();
    });
  }

  // what: {label, filter (API filter object), count}
  async function replay(what) {
    const rate = el("input", { type: "number", id: "replay-rate", min: "1", step: "1", inputmode: "numeric" });
    const extra = el(
      "p",
      {},
      el("label", { for: "replay-rate" }, "At most this many messages per second (optional) "),
      rate
    );
    const text =
      "Replay " + plural(what.count, "message") + " (" + what.label + ") to the inbound queue? " +
      "Each leaves the DLQ once the inbound queue has confirmed its copy.";
    if (!(await confirmAction("Replay", text, extra, "Replay " + plural(what.count, "message")))) return;
    // The server does nothing if the DLQ no longer holds this many.
    const body = Object.assign({ expect: what.count }, what.filter);
    if (rate.value) body.rate = Number(rate.value);
    say("Replaying " + plural(what.count, "message") + "…");
    try {
      const r = await api("/api/replay", { body: body });
      say(
        "Replayed " + plural(r.moved, "message") + " to " + r.queue + "; " +
          plural(r.kept, "message") + " read stay in the DLQ." + (r.error ? " Stopped: " + r.error : ""),
        r.error ? "error" : "done"
      );
      afterAction();
    } catch (e) {
      if (e.data && e.data.moved !== undefined) {
        say("Replayed " + plural(e.data.moved, "message") + ", then stopped: " + e.message, "error");
        afterAction();
      } else failed(e);
    }
  }

  async function purge(what) {
    const text =
      "Remove " + plural(what.count, "message") + " (" + what.label + ") from the DLQ for good? " +
      "Export them first if you may want them back.";
    if (!(await confirmAction("Purge", text, null, "Remove " + plural(what.count, "message")))) return;
    say("Removing " + plural(what.count, "message") + "…");
    try {
      const r = await api("/api/purge", { body: Object.assign({ expect: what.count }, what.filter) });
      say(
        "Removed " + plural(r.removed, "message") + "; " + plural(r.kept, "message") + " stay." +
          (r.error ? " Stopped: " + r.error : ""),
        r.error ? "error" : "done"
      );
      afterAction();
    } catch (e) {
      failed(e);
    }
  }

  async function exportThem(what) {
    const text =
      "Export " + plural(what.count, "message") + " (" + what.label + ") as JSON lines (the dlq export format)? " +
      "Nothing is removed.";
    if (!(await confirmAction("Export", text, null, "Download"))) return;
    const a = el("a", { href: "/api/export?" + qs(what.filter), download: "" });
    document.body.append(a);
    a.click();
    a.remove();
    say("Export of " + plural(what.count, "message") + " started: your browser downloads the file.", "done");
  }

  function afterAction() {
    // The latest read no longer says what is there: show it again (stale).
    render();
  }

  function actions(what) {
    return el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "replay", onclick: () => replay(what) }, "Replay"),
      el("button", { type: "button", class: "export", onclick: () => exportThem(what) }, "Export"),
      el("button", { type: "button", class: "danger purge", onclick: () => purge(what) }, "Purge")
    );
  }

  // === depth ===

  async function pollDepth() {
    try {
      const d = await api("/api/depth");
      document.getElementById("dlq-name").textContent = d.dlq;
      document.getElementById("depth-now").textContent = d.depth === null ? "no queue" : String(d.depth);
      history = d.history || [];
      const chart = document.getElementById("depth-chart");
      if (chart) drawChart(chart);
    } catch (e) {
      document.getElementById("depth-now").textContent = "unknown";
    }
  }

  function drawChart(box) {
    const W = 900, H = 120, L = 48, B = 22, T = 10;
    const now = Date.now() / 1000;
    const max = Math.max(1, ...history.map((p) => p[1]));
    const x = (t) => L + ((t - (now - 3600)) / 3600) * (W - L - 6);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "chart" });
    const title = svg("title", {});
    title.textContent = "DLQ depth over the last hour: " +
      (history.length ? "from " + history[0][1] + " to " + history[history.length - 1][1] + ", at most " + max : "no samples yet");
    s.append(title);
    for (const v of [0, max]) {
      s.append(svg("line", { x1: L, x2: W - 6, y1: y(v), y2: y(v), class: "grid" }));
      const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
      t.textContent = String(v);
      s.append(t);
    }
    for (const [label, t] of [["−60 min", now - 3600], ["−30 min", now - 1800], ["now", now]]) {
      const anchor = label === "now" ? "end" : label === "−60 min" ? "start" : "middle";
      const tx = svg("text", { x: x(t), y: H - 4, "text-anchor": anchor, class: "axis" });
      tx.textContent = label;
      s.append(tx);
    }
    if (history.length) {
      const pts = history.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
      s.append(svg("polyline", { points: pts, class: "line" }));
      const last = history[history.length - 1];
      s.append(svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, class: "dot" }));
    }
    box.replaceChildren(s);
  }

  // === views ===

  async function overview(fresh) {
    const readLine = el("p", { class: "read-at" }, fresh ? "Reading the whole DLQ…" : "Loading the latest read…");
    const again = el("button", { type: "button", id: "read-again" }, "Read again");
    const groupsBox = el("div", { id: "groups-box" });
    main.replaceChildren(
      el("h1", {}, "Overview"),
      el(
        "section",
        { "aria-labelledby": "depth-h" },
        el("h2", { id: "depth-h" }, "Depth, last hour"),
        el("div", { id: "depth-chart", class: "chart-box" })
      ),
      el(
        "section",
        { "aria-labelledby": "groups-h" },
        el("h2", { id: "groups-h" }, "Failure groups"),
        el("div", { class: "toolbar" }, readLine, again),
        groupsBox
      )
    );
    drawChart(document.getElementById("depth-chart"));
    again.addEventListener("click", () => overview(true));
    again.disabled = true;
    try {
      const g = await api("/api/groups" + (fresh ? "?fresh=1" : ""));
      lastGroups = g;
      readLine.textContent =
        "Read at " + when(g.read_at) + ": " + plural(g.depth, "message") + " in " + g.dlq + ", " +
        plural(g.groups.length, "group") + "." + (g.stale ? " The DLQ changed since (an action): read again." : "");
      if (g.stale) readLine.classList.add("stale");
      const rows = g.groups.map((grp) => {
        const what = { label: grp.label, filter: { group: grp.id }, count: grp.count };
        return el(
          "tr",
          { "data-group": grp.id },
          el("th", { scope: "row" }, el("a", { href: "#/group/" + encodeURIComponent(grp.id) }, grp.label),
            el("span", { class: "id" }, grp.id)),
          el("td", { class: "num" }, String(grp.count)),
          el("td", { class: "when" }, when(grp.first)),
          el("td", { class: "when" }, when(grp.last)),
          el("td", { class: "num" }, String(grp.replayed)),
          el("td", {}, actions(what))
        );
      });
      groupsBox.replaceChildren(
        rows.length
          ? table("Failure groups of the latest read, largest first", ["Group", "Messages", "First", "Last", "Failed again", "Actions"], rows, "groups")
          : el("p", { id: "groups-empty" }, "The DLQ held no message at that read.")
      );
    } catch (e) {
      readLine.textContent = "Could not read the DLQ.";
      failed(e);
    } finally {
      again.disabled = false;
    }
  }

  const FILTERS = [
    ["reason", "Reason", "api_failed, invalid_payload, delivery_limit, unknown"],
    ["target", "Failed target", "e.g. logging"],
    ["id", "Message id", "one id"],
    ["since", "Since", "RFC 3339 or 30m, 2h, 7d"],
    ["until", "Until", "RFC 3339 or a duration back"],
    ["grep", "Text in body or error", ""],
  ];

  async function messagesView(group, params) {
    const offset = Number(params.get("offset") || 0);
    const filter = {};
    if (group) filter.group = group;
    for (const [k] of FILTERS) if (params.get(k)) filter[k] = params.get(k);
    const known = lastGroups && lastGroups.groups.find((g) => g.id === group);
    const title = group ? (known ? known.label : "Group " + group) : "All messages";

    const form = el("form", { class: "filters", "aria-label": "Filter messages" });
    for (const [k, label, hint] of FILTERS) {
      form.append(
        el("p", {}, el("label", { for: "f-" + k }, label),
          el("input", { id: "f-" + k, name: k, type: "text", value: params.get(k) || "", placeholder: hint }))
      );
    }
    form.append(el("p", { class: "apply" }, el("button", { type: "submit" }, "Apply filters")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = {};
      for (const [k] of FILTERS) p[k] = form.elements[k].value.trim();
      location.hash = (group ? "#/group/" + encodeURIComponent(group) : "#/messages") + "?" + qs(p);
    });

    const listBox = el("div", { id: "messages-box" }, el("p", {}, "Reading the DLQ…"));
    main.replaceChildren(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " › ", title),
      el("h1", {}, title),
      group ? el("p", { class: "id" }, "group " + group) : null,
      form,
      listBox
    );

    let page;
    try {
      page = await api("/api/messages?" + qs(Object.assign({}, filter, { offset: offset, limit: PAGE })));
    } catch (e) {
      listBox.replaceChildren(el("p", {}, "Could not read the messages."));
      failed(e);
      return;
    }
    const selected = new Set();
    const selCount = el("span", { class: "sel-count" }, "0 selected");
    const selButtons = [];
    function refreshSel() {
      selCount.textContent = selected.size + " selected";
      selButtons.forEach((b) => (b.disabled = selected.size === 0));
    }
    const rows = page.messages.map((m) => {
      const id = m.message_id;
      const box = el("input", { type: "checkbox", "aria-label": "select " + (id || "message") });
      if (!id) box.disabled = true;
      box.addEventListener("change", () => {
        if (box.checked) selected.add(id);
        else selected.delete(id);
        refreshSel();
      });
      return el(
        "tr",
        {},
        el("td", {}, box),
        el("th", { scope: "row" }, id ? el("a", { href: "#/message/" + encodeURIComponent(id) }, id) : "(no message_id)"),
        el("td", {}, when(header(m, "x-bridge-dead-lettered-at"))),
        el("td", {}, header(m, "x-bridge-failed-targets") || "–"),
        el("td", { class: "error-text" }, header(m, "x-bridge-error")),
        el("td", { class: "num" }, String(m.replays || 0))
      );
    });
    const end = offset + page.messages.length;
    const pager = el(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      el("span", {}, page.total ? "Messages " + (offset + 1) + "–" + end + " of " + page.total : "No message matches."),
      offset > 0 ? el("a", { href: pageHash(group, params, Math.max(0, offset - PAGE)) }, "‹ Previous") : null,
      page.next_offset !== null && page.next_offset !== undefined
        ? el("a", { href: pageHash(group, params, page.next_offset) }, "Next ›")
        : end < page.total ? el("a", { href: pageHash(group, params, end) }, "Next ›") : null
    );
    const all = { label: "every message matching " + describe(filter), filter: filter, count: page.total };
    const sel = () => ({
      label: "the selected messages",
      filter: { id: Array.from(selected) },
      count: selected.size,
    });
    for (const [label, fn, cls] of [["Replay selected", replay, ""], ["Export selected", exportThem, ""], ["Purge selected", purge, "danger"]]) {
      const b = el("button", { type: "button", class: cls, disabled: true, onclick: () => fn(sel()) }, label);
      selButtons.push(b);
    }
    listBox.replaceChildren(
      el("div", { class: "toolbar" }, el("span", {}, plural(page.total, "message") + " match"), page.total ? actions(all) : null),
      page.messages.length
        ? table("Messages (oldest first)", ["Select", "Message id", "Dead-lettered at", "Failed targets", "Error", "Replays"], rows, "messages")
        : null,
      el("div", { class: "toolbar" }, selCount, ...selButtons),
      pager
    );
  }

  function describe(filter) {
    const parts = Object.entries(filter).map(([k, v]) => k + " " + v);
    return parts.length ? parts.join(", ") : "(everything)";
  }

  function pageHash(group, params, offset) {
    const p = new URLSearchParams(params);
    p.set("offset", String(offset));
    return (group ? "#/group/" + encodeURIComponent(group) : "#/messages") + "?" + p.toString();
  }

  async function messageView(id) {
    main.replaceChildren(el("h1", {}, "Message " + id), el("p", {}, "Reading the DLQ…"));
    let m;
    try {
      m = await api("/api/messages/" + encodeURIComponent(id));
    } catch (e) {
      main.replaceChildren(el("h1", {}, "Message " + id), el("p", {}, "Not shown."));
      failed(e);
      return;
    }
    const raw = m.body !== undefined ? m.body : null;
    let pretty = null;
    if (raw !== null) {
      try {
        pretty = JSON.stringify(JSON.parse(raw), null, 2);
      } catch (e) {
        pretty = null;
      }
    }
    const pre = el("pre", { id: "body", class: "body", tabindex: "0" });
    let showPretty = pretty !== null;
    const toggle = el("button", { type: "button", id: "raw-toggle", "aria-pressed": String(!showPretty) });
    function showBody() {
      if (raw === null) pre.textContent = "(not UTF-8; base64) " + m.body_base64;
      else pre.textContent = showPretty ? pretty : raw;
      toggle.textContent = showPretty ? "Show raw" : "Show pretty-printed";
      toggle.setAttribute("aria-pressed", String(!showPretty));
      toggle.disabled = pretty === null;
    }
    toggle.addEventListener("click", () => {
      showPretty = !showPretty;
      showBody();
    });
    showBody();
    const kv = (caption, obj, id) =>
      table(
        caption,
        ["Name", "Value"],
        Object.entries(obj || {}).map(([k, v]) =>
          el("tr", {}, el("th", { scope: "row" }, k),
            el("td", {}, typeof v === "string" ? v : el("pre", {}, JSON.stringify(v, null, 2))))
        ),
        id
      );
    const what = { label: "message " + id, filter: { id: [id] }, count: 1 };
    main.replaceChildren(
      el("p", { class: "crumbs" }, el("a", { href: "#/" }, "Overview"), " › ",
        el("a", { href: "#/group/" + encodeURIComponent(m.group) }, "group " + m.group), " › ", id),
      el("h1", {}, "Message ", el("code", {}, id)),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "Reason"), el("dd", {}, m.reason),
        el("dt", {}, "Dead-lettered at"), el("dd", {}, when(header(m, "x-bridge-dead-lettered-at"))),
        el("dt", {}, "Failed targets"), el("dd", {}, header(m, "x-bridge-failed-targets") || "–"),
        el("dt", {}, "Error"), el("dd", {}, header(m, "x-bridge-error") || "–"),
        el("dt", {}, "Replays"), el("dd", {}, String(m.replays || 0)),
        m.copies > 1 ? el("dt", {}, "Copies in the DLQ") : null,
        m.copies > 1 ? el("dd", {}, String(m.copies)) : null
      ),
      actions(what),
      el("section", { "aria-labelledby": "body-h" },
        el("div", { class: "toolbar" }, el("h2", { id: "body-h" }, "Body"), toggle), pre),
      el("section", { "aria-labelledby": "props-h" }, el("h2", { id: "props-h" }, "Properties"),
        kv("AMQP properties", m.properties, "properties")),
      el("section", { "aria-labelledby": "headers-h" }, el("h2", { id: "headers-h" }, "Headers"),
        kv("Every header, x-death included", m.headers, "headers"))
    );
  }

  // === routing ===

  function render() {
    const hash = location.hash || "#/";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "group" && parts[1]) messagesView(parts[1], params);
    else if (parts[0] === "messages") messagesView(null, params);
    else if (parts[0] === "message" && parts[1]) messageView(parts.slice(1).join("/"));
    else overview(false);
  }

  window.addEventListener("hashchange", () => {
    say("");
    render();
    main.focus();
  });
  render();
  pollDepth();
  depthTimer = setInterval(pollDepth, 5000);
  void depthTimer;
})();
