// Groups on the comparison (loaded before charts.js, which asks window.MarkovGroups): runs
// grouped by a hyperparameter or a tag draw one line per group, the mean over its runs, in a
// band from their minimum to their maximum, as W&B groups do; a group's name in the group
// legend expands it to its runs (thin lines in the group's colour). Each run's points are first
// put on a common grid of the x axis (its last value in each of up to 400 cells), so runs that
// were downsampled differently still line up. The choice is kept in the URL (?group=lr).
"use strict";
(function () {
  var doc = JSON.parse(document.getElementById("charts-data").textContent);
  var view = window.MarkovView;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  var CELLS = 400;
  var state = { by: view ? view.get("group") || "" : "", expanded: new Set(view ? view.list("expand") : []) };
  if (doc.runs.length < 2) return;  // one run: nothing to group

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function groupOf(run) {
    if (state.by === "tags") return (run.tags || []).join(" ") || "(no tags)";
    var v = run.params[state.by];
    return v === undefined || v === null ? "(none)" : String(v);
  }
  function groups() {  // [{name, colour, runs: [run ids]}] in the order of their values
    var by = {};
    doc.runs.forEach(function (r) { (by[groupOf(r)] = by[groupOf(r)] || []).push(r.id); });
    return Object.keys(by).sort(function (a, b) {
      return String(a).localeCompare(String(b), undefined, { numeric: true });
    }).map(function (name, i) { return { name: name, colour: PALETTE[i % PALETTE.length], runs: by[name] }; });
  }

  // -- controls: "group by" and the group legend ----------------------------------------------
  var names = new Set();
  doc.runs.forEach(function (r) { Object.keys(r.params).forEach(function (k) { names.add(k); }); });
  var choices = Array.from(names).sort().filter(function (k) {
    var seen = new Set(doc.runs.map(function (r) { return String(r.params[k]); }));
    return seen.size > 1 && seen.size < doc.runs.length;  // something to group by
  });
  if (doc.runs.some(function (r) { return r.tags && r.tags.length; })) choices.push("tags");
  var controls = document.getElementById("chart-controls");
  var label = document.createElement("label");
  label.innerHTML = 'group by <select id="group-by"><option value="">(no groups)</option>' +
    choices.map(function (c) { return '<option value="' + esc(c) + '">' + esc(c) + "</option>"; }).join("") +
    "</select>";
  controls.appendChild(label);
  var select = label.querySelector("select");
  if (choices.indexOf(state.by) < 0) state.by = "";
  select.value = state.by;
  var legend = document.createElement("ul");
  legend.id = "group-legend";
  legend.className = "run-legend group-legend";
  controls.parentNode.insertBefore(legend, controls.nextSibling);

  function showLegend() {
    legend.hidden = !state.by;
    legend.innerHTML = state.by ? groups().map(function (g) {
      var open = state.expanded.has(g.name);
      return '<li data-group="' + esc(g.name) + '"><button type="button" class="group-toggle" aria-expanded="' +
        open + '"><span class="swatch" style="background:' + g.colour + '"></span>' + esc(state.by) + " = " +
        esc(g.name) + " (" + g.runs.length + (g.runs.length === 1 ? " run" : " runs") + ")" +
        (open ? " ▾" : " ▸") + "</button></li>";
    }).join("") : "";
  }
  function changed() {
    if (view) { view.set("group", state.by); view.set("expand", Array.from(state.expanded)); }
    showLegend();
    if (window.MarkovCharts) window.MarkovCharts.redraw();
  }
  select.addEventListener("change", function () { state.by = select.value; state.expanded.clear(); changed(); });
  legend.addEventListener("click", function (event) {
    var li = event.target.closest("li[data-group]");
    if (!li) return;
    var name = li.dataset.group;
    if (state.expanded.has(name)) state.expanded.delete(name); else state.expanded.add(name);
    changed();
  });
  showLegend();

  // -- the data: per group mean, min, max on a common x grid ------------------------------------
  function build(tables, smoothing) {
    var lo = Infinity, hi = -Infinity;
    tables.forEach(function (t) {
      if (t.xs.length) { lo = Math.min(lo, t.xs[0]); hi = Math.max(hi, t.xs[t.xs.length - 1]); }
    });
    var cells = isFinite(lo) ? Math.max(1, Math.min(CELLS, Math.round(hi - lo) + 1)) : 0;
    var width = cells > 1 ? (hi - lo) / (cells - 1) : 1;
    var xs = [];
    for (var c = 0; c < cells; c++) xs.push(lo + c * width);
    var byRun = {};
    tables.forEach(function (t) {  // each run's last value per cell, null where it has none
      var ys = new Array(cells).fill(null), values = smoothing > 0 ? t.smoothValues : t.values;
      t.xs.forEach(function (x, i) {
        if (values[i] !== null) ys[Math.min(cells - 1, Math.round((x - lo) / width))] = values[i];
      });
      byRun[t.run.id] = ys;
    });
    var data = [xs], series = [{}], bands = [], runs = [];
    groups().forEach(function (g) {
      var mean = [], min = [], max = [];
      for (var c = 0; c < cells; c++) {
        var found = g.runs.map(function (id) { return byRun[id] ? byRun[id][c] : null; })
          .filter(function (v) { return v !== null && isFinite(v); });
        mean.push(found.length ? found.reduce(function (a, b) { return a + b; }, 0) / found.length : null);
        min.push(found.length ? Math.min.apply(null, found) : null);
        max.push(found.length ? Math.max.apply(null, found) : null);
      }
      var at = data.length;
      data.push(mean, max, min);
      series.push({ label: state.by + "=" + g.name, stroke: g.colour, width: 2, spanGaps: true, points: { show: false } },
        { label: g.name + " max", stroke: "rgba(0,0,0,0)", width: 0, spanGaps: true, points: { show: false } },
        { label: g.name + " min", stroke: "rgba(0,0,0,0)", width: 0, spanGaps: true, points: { show: false } });
      bands.push({ series: [at + 1, at + 2], fill: g.colour + "33" });
      if (state.expanded.has(g.name)) {
        g.runs.forEach(function (id) {
          data.push(byRun[id] || new Array(cells).fill(null));
          var run = tables.find(function (t) { return t.run.id === id; }).run;
          series.push({ label: run.name || run.id, stroke: g.colour, width: 0.75, alpha: 0.6, spanGaps: true, points: { show: false } });
          runs.push(id);
        });
      }
    });
    return { data: data, series: series, bands: bands, groups: groups().length, expandedRuns: runs };
  }

  window.MarkovGroups = {
    active: function () { return Boolean(state.by); },
    build: build,
    groups: groups,
  };
})();
