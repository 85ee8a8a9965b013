// Pilothouse web UI: draws the charts (uPlot) from the JSON next to them, fills their data tables on
// demand, and redraws after HTMX swaps and theme changes. No network requests of its own.
(function () {
  "use strict";

  var charts = [];

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  // Money for people, the rule of Money.display (pilothouse/domain/money.py): $1 or more with two
  // decimals and thousands separators, less with three significant digits, a minus before the "$"
  // (a tie rounds as its float does: charts only).
  function money(value) {
    var size = Math.abs(value), sign = value < 0 ? "-" : "";
    if (size > 0 && size < 1) {
      var rounded = Number(size.toFixed(Math.min(12, 2 - Math.floor(Math.log10(size)))));
      if (rounded < 1) return sign + "$" + size.toFixed(Math.min(12, 2 - Math.floor(Math.log10(rounded))));
    }
    return sign + "$" + size.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function format(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "$") return money(value);
    if (unit === "ms") return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
    return Math.abs(value) >= 1000 ? value.toLocaleString("en", { maximumFractionDigits: 0 }) : String(Math.round(value * 100) / 100);
  }

  function utcTime(seconds) {
    return new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ");
  }

  function draw(figure) {
    var holder = figure.querySelector(".plot");
    var data = JSON.parse(figure.querySelector(".chart-data").textContent);
    var unit = figure.dataset.unit || "";
    var names = Object.keys(data.series);
    var fg = cssVar("--fg"), grid = cssVar("--border");
    var axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    var series = [{ label: "time (UTC)", value: function (u, v) { return v === null ? "–" : utcTime(v); } }];
    names.forEach(function (name, i) {
      var colour = /error/.test(name) ? cssVar("--bad") : cssVar("--c" + ((i % 7) + 1));
      var marked = [];
      data.series[name].forEach(function (v, j) { if (v !== null && v !== 0) marked.push(j); });
      series.push({
        // a sparse series gets dots on its values: a lone busy bucket would otherwise draw nothing visible
        label: name, stroke: colour, width: 2, spanGaps: false,
        points: { show: marked.length > 0 && marked.length < 24, size: 5, fill: colour, filter: function () { return marked; } },
        fill: names.length === 1 ? colour + "22" : undefined,
        value: function (u, v) { return format(v, unit); }
      });
    });
    var opts = {
      width: Math.max(200, holder.clientWidth), height: 200,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      series: series,
      axes: [axis, Object.assign({}, axis, { size: 72, values: function (u, vals) { return vals.map(function (v) { return format(v, unit); }); } })],
      scales: { y: { range: function (u, min, max) { return [Math.min(0, min || 0), (max || 1) * 1.1]; } } },
      legend: { live: true },
      cursor: { focus: { prox: 24 } }
    };
    holder.textContent = "";
    var plot = new uPlot(opts, [data.t].concat(names.map(function (n) { return data.series[n]; })), holder);
    charts.push({ plot: plot, holder: holder });
  }

  function fillTable(details) {
    var wrap = details.querySelector(".table-wrap");
    if (!details.open || wrap.childElementCount) return;
    var figure = details.closest("figure");
    var data = JSON.parse(figure.querySelector(".chart-data").textContent);
    var unit = figure.dataset.unit || "";
    var names = Object.keys(data.series);
    var table = document.createElement("table");
    var head = table.createTHead().insertRow();
    ["time (UTC)"].concat(names).forEach(function (n) {
      var th = document.createElement("th"); th.scope = "col"; th.textContent = n; head.appendChild(th);
    });
    var body = table.createTBody();
    data.t.forEach(function (t, i) {
      var row = body.insertRow();
      var th = document.createElement("th"); th.scope = "row"; th.textContent = utcTime(t); row.appendChild(th);
      names.forEach(function (n) { var td = row.insertCell(); td.className = "num"; td.textContent = format(data.series[n][i], unit); });
    });
    wrap.appendChild(table);
  }

  // Times are sent in UTC; the browser shows them in its own time zone, the UTC time on hover.
  function pad(v) { return (v < 10 ? "0" : "") + v; }
  function zoneName(date) {
    try {
      var part = new Intl.DateTimeFormat("en-GB", { timeZoneName: "short" }).formatToParts(date)
        .filter(function (p) { return p.type === "timeZoneName"; })[0];
      return part ? part.value : "";
    } catch (e) { return ""; }
  }
  function localise(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      el.setAttribute("data-local", "");
      var utc = el.textContent.trim();
      if (!el.title) el.title = /UTC$/.test(utc) ? utc : utc + " UTC";
      var text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
        pad(date.getHours()) + ":" + pad(date.getMinutes()) + (/:\d\d:\d\d/.test(utc) ? ":" + pad(date.getSeconds()) : "");
      var zone = zoneName(date);
      el.textContent = zone ? text + " " + zone : text;
    });
  }

  // Idempotent: only elements not yet set up are touched, so it can run after every swap.
  function init() {
    localise(document);
    charts = charts.filter(function (c) { return document.body.contains(c.holder); });
    document.querySelectorAll("figure.chart:not([data-drawn])").forEach(function (figure) {
      if (!window.uPlot) return;
      figure.setAttribute("data-drawn", "");
      draw(figure);
    });
    document.querySelectorAll("details.chart-table:not([data-ready])").forEach(function (d) {
      d.setAttribute("data-ready", "");
      d.addEventListener("toggle", function () { fillTable(d); });
    });
    document.querySelectorAll("[data-select-on-focus]:not([data-ready])").forEach(function (input) {
      input.setAttribute("data-ready", "");
      input.addEventListener("focus", function () { input.select(); });
    });
  }

  function redrawAll() {
    charts.forEach(function (c) { c.plot.destroy(); });
    charts = [];
    if (window.uPlot) document.querySelectorAll("figure.chart").forEach(draw);
  }

  // Filter forms leave their empty fields out of the URL, so that a saved filter reads cleanly.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-drop-empty]")) return;
    form.querySelectorAll("input, select").forEach(function (field) {
      if (field.name && field.value === "") field.disabled = true;
    });
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-drop-empty] [disabled]").forEach(function (f) { f.disabled = false; });
  });

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSettle", init);
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(200, c.holder.clientWidth), height: 200 }); });
    }, 150);
  });
  if (window.matchMedia) {
    var scheme = window.matchMedia("(prefers-color-scheme: dark)");
    if (scheme.addEventListener) scheme.addEventListener("change", redrawAll);
  }
})();

// The review screen's keys: 1-9 answer the highlighted question (then the next is highlighted), j/k
// move between questions, n saves and opens the next item, s skips. Typing in a text box is left alone.
(function () {
  "use strict";
  var form = document.getElementById("review-form");
  if (!form) return;
  var groups = Array.prototype.slice.call(form.querySelectorAll("fieldset.score-config"));
  var active = 0;

  function highlight(index) {
    if (!groups.length) return;
    active = Math.max(0, Math.min(groups.length - 1, index));
    groups.forEach(function (g, i) { g.classList.toggle("active", i === active); });
  }

  function press(button) {
    var target = document.getElementById(button);
    if (target) form.requestSubmit(target);
  }

  groups.forEach(function (g, i) { g.addEventListener("click", function () { highlight(i); }); });
  highlight(0);
  document.addEventListener("keydown", function (event) {
    var typing = event.target.closest && event.target.closest("textarea, input[type=text], input[type=number], input:not([type]), select");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    var key = event.key;
    if (/^[1-9]$/.test(key) && groups.length) {
      var option = groups[active].querySelector("input[data-key='" + key + "']");
      if (option) {
        option.checked = true;
        event.preventDefault();
        if (active < groups.length - 1) highlight(active + 1);
      }
    } else if (key === "j") {
      highlight(active + 1);
    } else if (key === "k") {
      highlight(active - 1);
    } else if (key === "n") {
      event.preventDefault();
      press("review-submit");
    } else if (key === "s") {
      event.preventDefault();
      press("review-skip");
    }
  });
})();

// "Show all" under a long message, and the copy buttons (an id, or a link to this page and span).
(function () {
  "use strict";

  function say(text) {
    var out = document.querySelector(".copied");
    if (out) out.textContent = text;
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { say("Copied."); }, function () { say("Could not copy: " + text); });
      return;
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    document.body.removeChild(area);
    say(done ? "Copied." : "Could not copy: " + text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-show-all], [data-copy], [data-copy-link]");
    if (!button) return;
    if (button.hasAttribute("data-show-all")) {
      var box = button.previousElementSibling;
      var open = box.classList.toggle("open");
      button.setAttribute("aria-expanded", open ? "true" : "false");
      if (!button.dataset.label) button.dataset.label = button.textContent;
      button.textContent = open ? "Show less" : button.dataset.label;
    } else if (button.hasAttribute("data-copy")) {
      copy(button.getAttribute("data-copy"));
    } else {
      var span = button.getAttribute("data-copy-link");
      copy(span ? location.origin + location.pathname + "?span=" + encodeURIComponent(span) : location.href.split("#")[0]);
    }
  });
})();

// The trace view: a virtualised span tree (only the rows in sight are in the page, so a trace of
// 10,000 spans stays quick) that can be collapsed and searched, beside the selected span's detail,
// which is fetched from the server when a span is selected. Text goes into the tree as text only.
(function () {
  "use strict";
  var view = document.getElementById("trace-view");
  if (!view) return;
  var data = JSON.parse(document.getElementById("trace-outline").textContent);
  var spans = data.spans, n = spans.length, ROW = 28, OVERSCAN = 12;
  var tree = document.getElementById("span-tree"), detail = document.getElementById("span-detail");
  var search = document.getElementById("tree-search"), status = document.getElementById("tree-status");
  var children = new Array(n), parent = new Int32Array(n), depth = new Int32Array(n);
  var order = [], after = new Int32Array(n), position = new Int32Array(n);
  var roots = [];
  for (var i = 0; i < n; i++) {
    var p = spans[i][1];
    parent[i] = p >= 0 && p < n && p !== i ? p : -1;
    if (parent[i] >= 0) (children[parent[i]] = children[parent[i]] || []).push(i); else roots.push(i);
  }
  // depth-first order; spans in a parent cycle (never reached from a root) become roots
  var seen = new Uint8Array(n);
  function walk(start) {
    var stack = [[start, 0, 0]];
    while (stack.length) {
      var top = stack[stack.length - 1], node = top[0];
      if (top[2] === 0) {
        if (seen[node]) { stack.pop(); continue; }
        seen[node] = 1; depth[node] = top[1]; position[node] = order.length; order.push(node);
      }
      var kids = children[node] || [];
      if (top[2] < kids.length) { stack.push([kids[top[2]++], top[1] + 1, 0]); continue; }
      after[node] = order.length; // where its subtree ends in `order`
      stack.pop();
    }
  }
  roots.forEach(walk);
  for (i = 0; i < n; i++) if (!seen[i]) { parent[i] = -1; walk(i); }

  var open = new Uint8Array(n);
  for (i = 0; i < n; i++) open[i] = n <= 1000 || depth[i] < 1 ? 1 : 0;
  var visible = [], matches = null, selected = -1, cursor = -1, loading = 0;

  function hasKids(s) { return (children[s] || []).length > 0; }

  function text(s) {
    var row = spans[s];
    return (data.names[row[2]] + " " + data.kinds[row[3]] + " " + (row[7] >= 0 ? data.models[row[7]] : "")).toLowerCase();
  }

  function recompute() {
    visible = [];
    if (matches) {
      for (var k = 0; k < order.length; k++) if (matches[order[k]]) visible.push(order[k]);
    } else {
      for (var j = 0; j < order.length;) {
        var s = order[j];
        visible.push(s);
        j = open[s] ? j + 1 : after[s];
      }
    }
    holder.style.height = visible.length * ROW + "px";
    draw();
  }

  function duration(us) {
    return us >= 1e6 ? (us / 1e6).toFixed(2) + " s" : us >= 1000 ? Math.round(us / 1000) + " ms" : (us / 1000).toFixed(2) + " ms";
  }

  function rowOf(s, index) {
    var span = spans[s], row = document.createElement("div");
    row.className = "tree-row" + (s === selected ? " selected" : "") + (index === cursor ? " cursor" : "") + (span[6] ? " failed" : "");
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(depth[s] + 1));
    row.setAttribute("aria-selected", s === selected ? "true" : "false");
    if (hasKids(s)) row.setAttribute("aria-expanded", open[s] || matches ? "true" : "false");
    row.id = "row-" + span[0];
    row.dataset.index = String(s);
    row.style.top = index * ROW + "px";
    row.style.paddingLeft = 4 + Math.min(depth[s], 40) * 14 + "px";
    var twisty = document.createElement("span");
    twisty.className = "twisty";
    twisty.setAttribute("aria-hidden", "true");
    twisty.textContent = hasKids(s) ? (open[s] || matches ? "▾" : "▸") : "";
    var kind = document.createElement("span");
    kind.className = "kind kind-" + data.kinds[span[3]];
    kind.textContent = data.kinds[span[3]];
    var name = document.createElement("span");
    name.className = "tree-name";
    name.textContent = data.names[span[2]];
    var model = document.createElement("span");
    model.className = "muted small";
    model.textContent = span[7] >= 0 ? data.models[span[7]] : "";
    var time = document.createElement("span");
    time.className = "tree-time num";
    time.textContent = duration(span[5]);
    var track = document.createElement("span");
    track.className = "tree-track";
    track.setAttribute("aria-hidden", "true");
    var bar = document.createElement("span");
    bar.className = "wf-bar kind-" + data.kinds[span[3]] + (span[6] ? " bad" : "");
    var left = Math.min(99.5, 100 * span[4] / data.total_us);
    bar.style.left = left + "%";
    bar.style.width = Math.max(0.5, Math.min(100 - left, 100 * span[5] / data.total_us)) + "%";
    track.appendChild(bar);
    row.append(twisty, kind, " ", name, " ", model, track, time);
    return row;
  }

  function draw() {
    var first = Math.max(0, Math.floor(tree.scrollTop / ROW) - OVERSCAN);
    var last = Math.min(visible.length, Math.ceil((tree.scrollTop + tree.clientHeight) / ROW) + OVERSCAN);
    var rows = document.createDocumentFragment();
    for (var k = first; k < last; k++) rows.appendChild(rowOf(visible[k], k));
    holder.replaceChildren(rows);
  }

  function reveal(s) {
    for (var a = parent[s]; a >= 0; a = parent[a]) open[a] = 1;
    recompute();
    var index = visible.indexOf(s);
    if (index < 0) return;
    cursor = index;
    var top = index * ROW;
    if (top < tree.scrollTop || top + ROW > tree.scrollTop + tree.clientHeight) tree.scrollTop = Math.max(0, top - tree.clientHeight / 3);
    draw();
  }

  function select(s, push) {
    selected = s;
    draw();
    var id = spans[s][0], ticket = ++loading;
    detail.setAttribute("aria-busy", "true");
    fetch("/traces/" + data.trace + "/spans/" + id, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected && /\/login/.test(response.url)) { location.href = response.url; return null; }
        if (!response.ok) {
          if (ticket === loading) detail.textContent = "This span could not be loaded (HTTP " + response.status + "); reload the page.";
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || ticket !== loading) return;
        detail.innerHTML = html; // the server's template, escaped there
        detail.removeAttribute("aria-busy");
        var option = document.getElementById("s-obs-span");
        if (option) { option.value = id; option.textContent = "the selected span: " + data.kinds[spans[s][3]] + " " + data.names[spans[s][2]].slice(0, 40); }
      });
    if (push !== false) history.replaceState(null, "", location.pathname + "?span=" + encodeURIComponent(id));
  }

  var holder = document.createElement("div");
  holder.className = "tree-rows";
  tree.appendChild(holder);
  tree.addEventListener("scroll", function () { window.requestAnimationFrame(draw); });
  tree.addEventListener("click", function (event) {
    var row = event.target.closest(".tree-row");
    if (!row) return;
    var s = Number(row.dataset.index);
    cursor = visible.indexOf(s);
    if (event.target.classList.contains("twisty") && hasKids(s) && !matches) {
      open[s] = open[s] ? 0 : 1;
      recompute();
      return;
    }
    select(s);
  });
  tree.addEventListener("keydown", function (event) {
    if (!visible.length) return;
    var s = visible[Math.max(0, cursor)];
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      cursor = Math.max(0, Math.min(visible.length - 1, cursor + (event.key === "ArrowDown" ? 1 : -1)));
      reveal(visible[cursor]);
    } else if (event.key === "ArrowRight" && hasKids(s) && !open[s]) {
      open[s] = 1; recompute();
    } else if (event.key === "ArrowLeft") {
      if (hasKids(s) && open[s] && !matches) { open[s] = 0; recompute(); } else if (parent[s] >= 0) reveal(parent[s]);
    } else if (event.key === "Enter" || event.key === " ") {
      select(s);
    } else return;
    event.preventDefault();
  });
  document.getElementById("tree-expand").addEventListener("click", function () { open.fill(1); recompute(); });
  document.getElementById("tree-collapse").addEventListener("click", function () {
    for (var k = 0; k < n; k++) open[k] = parent[k] < 0 ? 1 : 0;
    recompute();
  });
  var timer = null;
  search.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var q = search.value.trim().toLowerCase();
      if (!q) { matches = null; status.textContent = ""; recompute(); return; }
      matches = new Uint8Array(n);
      var found = 0;
      for (var k = 0; k < n; k++) {
        if (text(k).indexOf(q) < 0) continue;
        found++;
        for (var a = k; a >= 0 && !matches[a]; a = parent[a]) matches[a] = 1; // with its ancestors
      }
      status.textContent = found === 1 ? "1 span matches" : found.toLocaleString("en") + " spans match";
      tree.scrollTop = 0;
      recompute();
    }, 120);
  });
  var first = detail.querySelector("[data-span]");
  var start = -1;
  if (first) for (i = 0; i < n; i++) if (spans[i][0] === first.getAttribute("data-span")) { start = i; break; }
  selected = start;
  recompute();
  if (start >= 0) reveal(start);
  if (window.performance && performance.mark) performance.mark("trace-tree-ready"); // benchmarks/ui.py
  tree.setAttribute("data-ready", "");
})();
