// Panels of the chart pages (loaded before charts.js, which calls window.MarkovPanels):
// - sections by key prefix (`train/…`, `val/…`), unprefixed keys first, system metrics
//   (system.*, process.*, hw.*) last in a section collapsed by default, pinned panels on top;
// - a search box over the keys, a hide button per panel and one "show hidden" for them all;
// - one legend per page (the comparison's run list) that reads out the hovered chart, and run
//   highlight: hovering a line or a legend row brings that run forward in every chart;
// - axis ticks that read: no two alike, scientific notation on log axes and for tiny or huge
//   values, units from the key's OpenTelemetry name (bytes as KiB/MiB/GiB, seconds, ratios as %).
// The view (search, hidden, pinned, open sections) is kept in the URL through MarkovView.
"use strict";
(function () {
  var SYSTEM = /^(system|process|hw)\./;
  var grid = document.getElementById("charts");
  var view = window.MarkovView;
  var state = {
    hide: new Set(view ? view.list("hide") : []),
    pin: view ? view.list("pin") : [],
    search: view ? view.get("panels") || "" : "",
    open: new Set(view ? view.list("open") : []),
  };
  var sections = {};  // name -> {box, body}
  var figures = {};   // key -> figure
  grid.classList.add("sectioned");

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function save() {
    if (!view) return;
    view.set("hide", Array.from(state.hide));
    view.set("pin", state.pin);
    view.set("panels", state.search);
    view.set("open", Array.from(state.open));
  }

  // -- sections ---------------------------------------------------------------------------------
  function sectionName(key) {
    if (state.pin.indexOf(key) >= 0) return "Pinned";
    if (SYSTEM.test(key)) return "System";
    var slash = key.indexOf("/");
    return slash > 0 ? key.slice(0, slash) : "Charts";
  }
  function rank(name) {  // Pinned, Charts, prefixes (a–z), System
    return name === "Pinned" ? "0" : name === "Charts" ? "1" : name === "System" ? "3" : "2" + name;
  }
  function section(name) {
    if (sections[name]) return sections[name];
    var box = document.createElement("details");
    box.className = "panel-section";
    box.dataset.section = name;
    box.open = name === "System" ? state.open.has("System") : !state.open.has("-" + name);
    box.innerHTML = "<summary><span class=\"section-name\">" + esc(name) +
      "</span> <small class=\"muted section-count\"></small></summary><div class=\"section-grid\"></div>";
    var after = Object.keys(sections).filter(function (n) { return rank(n) > rank(name); })
      .sort(function (a, b) { return rank(a) < rank(b) ? -1 : 1; })[0];
    grid.insertBefore(box, after ? sections[after].box : null);
    var wasOpen = box.open;  // the toggle event of setting `open` above is not the user's
    box.addEventListener("toggle", function () {
      if (box.open === wasOpen) return;
      wasOpen = box.open;
      // A collapsed section's charts were drawn at a guessed width: fit them now.
      window.dispatchEvent(new Event("resize"));
      if (name === "System") { if (box.open) state.open.add("System"); else state.open.delete("System"); }
      else if (box.open) state.open.delete("-" + name); else state.open.add("-" + name);
      save();
    });
    sections[name] = { box: box, body: box.querySelector(".section-grid") };
    return sections[name];
  }
  function put(figure, key) {
    var body = section(sectionName(key)).body;
    var pinned = state.pin.indexOf(key);
    var later = Array.from(body.children).find(function (other) {
      var k = other.dataset.key;
      return pinned >= 0 ? state.pin.indexOf(k) > pinned : k > key;
    });
    body.insertBefore(figure, later || null);
  }
  function tidy() {
    var words = state.search.trim().toLowerCase().split(/\s+/).filter(Boolean);
    Object.keys(figures).forEach(function (key) {
      var lower = key.toLowerCase();
      var found = words.every(function (w) { return lower.indexOf(w) >= 0; });
      figures[key].hidden = state.hide.has(key) || !found;
      figures[key].querySelector(".pin").textContent = state.pin.indexOf(key) >= 0 ? "unpin" : "pin";
    });
    Object.keys(sections).forEach(function (name) {
      var s = sections[name], all = s.body.children.length;
      var shown = Array.from(s.body.children).filter(function (f) { return !f.hidden; }).length;
      s.box.hidden = all === 0 || (shown === 0 && words.length > 0);
      s.box.querySelector(".section-count").textContent = shown === all ? String(all) : shown + " of " + all;
    });
    var hidden = state.hide.size;
    var button = document.getElementById("panels-unhide");
    button.hidden = hidden === 0;
    button.textContent = "show " + hidden + " hidden";
  }
  function retidy() {  // panels shown again were laid out hidden: fit them
    tidy();
    window.dispatchEvent(new Event("resize"));
  }

  // -- controls: search, show hidden; pin and hide on each panel -------------------------------
  var controls = document.getElementById("chart-controls");
  var search = document.createElement("input");
  search.type = "search";
  search.id = "panel-search";
  search.placeholder = "search panels";
  search.setAttribute("aria-label", "search panels");
  search.value = state.search;
  var unhide = document.createElement("button");
  unhide.type = "button";
  unhide.id = "panels-unhide";
  unhide.hidden = true;
  controls.insertBefore(unhide, controls.firstChild);
  controls.insertBefore(search, controls.firstChild);
  var pending = 0;
  search.addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(function () { state.search = search.value; save(); retidy(); }, 100);
  });
  unhide.addEventListener("click", function () { state.hide.clear(); save(); retidy(); });
  grid.addEventListener("click", function (event) {
    var button = event.target.closest("button.panel-action");
    if (!button) return;
    var figure = button.closest("figure.chart"), key = figure.dataset.key;
    if (button.classList.contains("hide")) state.hide.add(key);
    else {
      var at = state.pin.indexOf(key);
      if (at >= 0) state.pin.splice(at, 1); else state.pin.push(key);
      put(figure, key);
    }
    save();
    retidy();
  });

  // -- one legend per page: the comparison's run list reads out the hovered chart --------------
  var legend = document.getElementById("run-legend");
  if (legend) document.body.classList.add("page-legend");
  function legendRow(runId) {
    return legend && legend.querySelector('li[data-run="' + CSS.escape(runId) + '"]');
  }
  function readout(key, runId, text) {
    if (!legend) return;
    var head = document.getElementById("run-legend-key");
    if (runId === null) {
      legend.querySelectorAll(".legend-value").forEach(function (el) { el.textContent = ""; });
      if (head) head.textContent = "";
      return;
    }
    if (head) head.textContent = key;
    var row = legendRow(runId), cell = row && row.querySelector(".legend-value");
    if (cell) cell.textContent = text;
  }
  function focus(runId) {
    if (!legend) return;
    legend.querySelectorAll("li.focused").forEach(function (li) { li.classList.remove("focused"); });
    var row = runId && legendRow(runId);
    if (row) row.classList.add("focused");
    legend.classList.toggle("has-focus", Boolean(row));
  }
  function highlight(runId) {  // every chart brings the run's line forward (uPlot's focus)
    var charts = window.MarkovCharts;
    if (!charts) return;
    var index = charts.runs.findIndex(function (r) { return r.id === runId; });
    Object.keys(charts.charts).forEach(function (k) {
      var u = charts.charts[k].u;
      if (u) u.setSeries(index < 0 ? null : 1 + 2 * index, { focus: index >= 0 });
    });
    focus(index < 0 ? null : runId);
  }
  if (legend) {
    legend.addEventListener("mouseover", function (event) {
      var li = event.target.closest("li[data-run]");
      if (li) highlight(li.dataset.run);
    });
    legend.addEventListener("mouseleave", function () { highlight(null); });
  }

  // -- ticks ------------------------------------------------------------------------------------
  var UNITS = [
    [/memory\.(usage|limit)|(^|[._\/])bytes?$/i, "bytes"],
    [/utilization|(^|[._\/])(ratio|fraction)$/i, "ratio"],
    [/(^|[._\/])(time|duration|seconds|latency)$|_s$|_secs?$/i, "seconds"],
    [/^hw\.temperature/, "celsius"],
    [/^hw\.power/, "watts"],
  ];
  function unitOf(key) {
    var found = UNITS.find(function (u) { return u[0].test(key); });
    return found ? found[1] : "";
  }
  function sci(v, digits) {
    if (v === 0) return "0";
    var text = v.toExponential(digits);  // 1.50e-5 -> 1.5e-5, 1.00e+3 -> 1e3
    return text.replace(/\.?0+e/, "e").replace("e+", "e");
  }
  // The shortest labels that say each tick's value (to a millionth of the smallest one, or of
  // the gap between ticks on a linear axis): never two alike, never a non-zero tick as 0.
  function numbers(splits, log) {
    var sizes = splits.filter(function (v) { return v; }).map(Math.abs);
    var hi = sizes.length ? Math.max.apply(null, sizes) : 0, lo = sizes.length ? Math.min.apply(null, sizes) : 0;
    var scientific = log ? lo < 1e-3 || hi >= 1e5 : hi >= 1e6 || (hi > 0 && hi < 1e-3);
    var gap = Infinity;
    for (var i = 1; i < splits.length; i++) gap = Math.min(gap, Math.abs(splits[i] - splits[i - 1]) || Infinity);
    for (var d = 0; d <= 14; d++) {
      var labels = splits.map(function (v) {
        if (v === null || v === undefined) return "";
        if (scientific) return sci(v, d);
        return log ? String(parseFloat(v.toPrecision(d + 1))) : v.toFixed(d);  // 10, 1, 0.1
      });
      var exact = splits.every(function (v, i) {
        var room = 1e-6 * (log || scientific ? Math.abs(v) : Math.min(gap, hi || 1));
        return v === null || v === undefined || Math.abs(Number(labels[i]) - v) <= room;
      });
      var shown = labels.filter(function (t) { return t !== ""; });
      if (exact && new Set(shown).size === shown.length) return labels;
    }
    return splits.map(function (v) { return v === null || v === undefined ? "" : String(v); });
  }
  var BYTES = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function scaled(splits, by, log, suffix) {  // null splits (log axes' unlabelled ones) stay ""
    var labels = numbers(splits.map(function (v) { return v === null || v === undefined ? v : v * by; }), log);
    return labels.map(function (t) { return t === "" ? t : t + suffix; });
  }
  function labels(splits, unit, log) {
    var sizes = splits.filter(function (v) { return v; }).map(Math.abs);
    var hi = sizes.length ? Math.max.apply(null, sizes) : 0;
    if (unit === "bytes") {
      var power = Math.max(0, Math.min(BYTES.length - 1, Math.floor(Math.log(hi || 1) / Math.log(1024))));
      return scaled(splits, Math.pow(1024, -power), false, " " + BYTES[power]);
    }
    if (unit === "ratio") return scaled(splits, 100, log, "%");
    if (unit === "seconds" && hi < 1 && hi > 0) return scaled(splits, 1000, log, " ms");
    return scaled(splits, 1, log, { seconds: " s", celsius: " °C", watts: " W" }[unit] || "");
  }
  // Axis text and grid in the page's colours (uPlot draws on a canvas: CSS does not reach it).
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  function colours() {
    return dark ? { stroke: "#c8c8c8", grid: { stroke: "#333a42" }, ticks: { stroke: "#333a42" } } : {};
  }
  function xAxis() { return colours(); }
  function yAxis(key) {
    var unit = unitOf(key);
    return Object.assign({
      values: function (u, splits) { return labels(splits, unit, u.scales.y.distr === 3); },
      size: function (u, values) {
        var longest = (values || []).reduce(function (n, v) { return Math.max(n, String(v).length); }, 3);
        return 20 + 8 * longest;
      },
    }, colours());
  }

  window.MarkovPanels = {
    place: function (figure, key) {
      figures[key] = figure;
      var caption = figure.querySelector("figcaption");
      caption.insertAdjacentHTML("beforeend", '<span class="panel-actions">' +
        '<button type="button" class="panel-action pin" title="pin to the top">pin</button>' +
        '<button type="button" class="panel-action hide" title="hide this panel">hide</button></span>');
      put(figure, key);
      tidy();
    },
    yAxis: yAxis,
    xAxis: xAxis,
    readout: readout,
    focus: focus,
    labels: labels,
    unitOf: unitOf,
  };
})();
