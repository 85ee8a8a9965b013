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

  // Idempotent: only elements not yet set up are touched, so it can run after every swap.
  function init() {
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
