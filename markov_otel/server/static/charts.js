// Metric charts of one or several runs (uPlot): one chart per key, one line per run, a legend by
// run name that reads out the value under the cursor, zoom (drag; double-click resets) that
// re-reads the range at full resolution, log scale, EMA smoothing with the raw line kept faint,
// non-finite values as gaps with a marker, x by step or time, and live appends while a run is
// running (every 2 s, asking with the ETag it has: 304 while nothing changed; new points only,
// by since_step; not while the tab is hidden; each recording read is passed on as the event
// "markov:recording", which keeps the run page's header current). Data: GET /api/v1/series. Marks
// <html data-charts-ready="N"> once the charts are drawn.
"use strict";
(function () {
  var root = document.documentElement;
  window.addEventListener("error", function (event) { root.dataset.jsError = String(event.message); });

  var doc = JSON.parse(document.getElementById("charts-data").textContent);
  var runs = doc.runs;
  var MAX_POINTS = 1000, POLL_MS = 2000;
  var TERMINAL = ["finished", "failed", "terminated", "interrupted", "crashed"];
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39",
    "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"];
  // A run's colour is its position in the page's list: the same in every chart and after updates.
  runs.forEach(function (r, i) {
    r.colour = i < PALETTE.length ? PALETTE[i] : "hsl(" + Math.round(i * 137.508) % 360 + ",60%,42%)";
    r.startSec = Date.parse(r.start) / 1000;
  });
  var byId = {};
  runs.forEach(function (r) { byId[r.id] = r; });

  var options = { smoothing: 0, log: false, x: "step" };
  var panels = window.MarkovPanels, view = window.MarkovView;  // panels.js, view.js (optional)
  var groups = window.MarkovGroups;  // groups.js: one line per group of runs (optional)
  var series = {};   // key -> run id -> {points: [[step, value, t]], last, lastStep, appended}
  var charts = {};   // key -> {key, figure, holder, legend, u, tables, zoom}
  var grid = document.getElementById("charts");
  var timeOrigin = 0;  // the earliest point time: relative time of a run without a start time

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmtValue(v) {
    if (typeof v === "string") return v;
    if (v === null || v === undefined) return "";
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-4 || a >= 1e7) ? v.toExponential(4) : String(parseFloat(v.toPrecision(6)));
  }
  function fmtX(x) {
    if (options.x === "wall") return new Date(x * 1000).toLocaleString();
    if (options.x === "relative") return x.toFixed(1) + " s";
    return "step " + Math.round(x);
  }

  // -- fetching ---------------------------------------------------------------------------------
  function fetchSeries(ids, key, extra) {
    var url = "/api/v1/series?ids=" + ids.map(encodeURIComponent).join(",") + "&key=" +
      encodeURIComponent(key) + "&max_points=" + MAX_POINTS + (extra || "");
    return fetch(url, { credentials: "same-origin", cache: "no-cache", headers: { Accept: "application/json" } })
      .then(function (answer) {
        if (!answer.ok) throw new Error("GET " + url + " answered " + answer.status);
        return answer.json();
      });
  }
  function keep(key, doc, append) {
    var bucket = series[key] = series[key] || {};
    doc.series.forEach(function (s) {
      var have = bucket[s.recording_id];
      if (!append || !have) {
        have = bucket[s.recording_id] = { points: s.points, appended: 0 };
      } else {
        var after = have.lastStep === undefined ? -Infinity : have.lastStep;
        var fresh = s.points.filter(function (p) { return p[0] > after; });
        have.points = have.points.concat(fresh);
        have.appended += fresh.length;
      }
      have.last = s.last;
      have.lastStep = have.points.length ? have.points[have.points.length - 1][0] : undefined;
    });
  }

  // -- the data a chart draws -------------------------------------------------------------------
  function xOf(run, p) {
    if (options.x === "wall") return p[2] / 1e9;
    if (options.x === "relative") {
      var origin = isNaN(run.startSec) ? timeOrigin : run.startSec;
      return p[2] / 1e9 - origin;
    }
    return p[0];
  }
  // One run's table: x, raw y, smoothed y, and the non-finite points as markers.
  function table(run, points) {
    var rows = points.map(function (p) { return [xOf(run, p), p[1], p[0]]; });
    if (options.x !== "step") rows.sort(function (a, b) { return a[0] - b[0]; });
    var xs = [], values = [], steps = [], marks = [];
    rows.forEach(function (row) {
      var y = typeof row[1] === "number" ? row[1] : null;
      if (y === null) marks.push({ x: row[0], kind: row[1], step: row[2] });
      if (xs.length && xs[xs.length - 1] === row[0]) {  // one x, one value: keep the later
        values[values.length - 1] = y; steps[steps.length - 1] = row[2]; return;
      }
      xs.push(row[0]); values.push(y); steps.push(row[2]);
    });
    var smooth = ema(values, options.smoothing);
    return { run: run, xs: xs, values: values, raw: plotted(values), smooth: plotted(smooth),
      smoothValues: smooth, steps: steps, marks: marks };
  }
  // On a log scale a value <= 0 has no place: it is left out of the line (still read out).
  function plotted(values) {
    if (!options.log) return values;
    return values.map(function (v) { return v !== null && v <= 0 ? null : v; });
  }
  // TensorBoard's smoothing: an exponential moving average, debiased so the start isn't pulled
  // to zero; a gap stays a gap and does not reset the average.
  function ema(values, weight) {
    if (!weight) return values;
    var last = 0, n = 0;
    return values.map(function (v) {
      if (v === null) return null;
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }
  function chartData(key) {
    var tables = runs.map(function (run) {
      var s = series[key] && series[key][run.id];
      return table(run, s ? s.points : []);
    });
    if (groups && groups.active()) {
      var grouped = groups.build(tables, options.smoothing);
      return { tables: tables, data: grouped.data, grouped: grouped };
    }
    var joined = uPlot.join(tables.map(function (t) { return [t.xs, t.raw, t.smooth]; }));
    return { tables: tables, data: joined, grouped: null };
  }

  // -- drawing ----------------------------------------------------------------------------------
  function uplotOptions(key, chart, width) {
    var smooth = options.smoothing > 0;
    var lines = [{}];
    runs.forEach(function (run) {
      lines.push({ label: run.name || run.id, stroke: run.colour, width: smooth ? 1 : 1.5,
        alpha: smooth ? 0.25 : 1, spanGaps: false, points: { show: false } });
      lines.push({ label: (run.name || run.id) + " (smoothed)", stroke: run.colour, width: 1.75,
        show: smooth, spanGaps: false, points: { show: false } });
    });
    if (chart.grouped) lines = chart.grouped.series;
    return {
      bands: chart.grouped ? chart.grouped.bands : [],
      width: width, height: 240, legend: { show: false },
      cursor: { drag: { x: true, y: false }, sync: { key: "markov-charts" }, focus: { prox: 16 } },
      focus: { alpha: 0.3 },
      scales: { x: { time: options.x === "wall" }, y: { distr: options.log ? 3 : 1 } },
      axes: [Object.assign({ label: options.x === "step" ? "step" : options.x === "wall" ? "" : "seconds since start" },
        panels ? panels.xAxis() : {}),
        panels ? panels.yAxis(key) : {}],
      series: lines,
      hooks: {
        setSeries: [function (u, i) {
          if (panels && !chart.grouped) panels.focus(i === null || i < 1 ? null : runs[(i - 1) >> 1].id);
        }],
        setCursor: [function (u) { readout(chart, u); }],
        draw: [function (u) { drawMarks(chart, u); }],
        setSelect: [function (u) { zoomTo(chart, u); }],
      },
    };
  }
  function makeChart(key) {
    var figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.key = key;
    figure.innerHTML = "<figcaption>" + esc(key) + ' <small class="muted"></small></figcaption>' +
      '<div class="plot"></div><div class="legend"><div class="legend-x muted">&nbsp;</div>' +
      runs.map(function (run) {
        return '<div class="legend-row" data-run="' + esc(run.id) + '"><span class="swatch" style="background:' +
          run.colour + '"></span><span class="legend-name">' + esc(run.name || run.id) +
          '</span><span class="legend-value"></span></div>';
      }).join("") + '</div><div class="marks-note muted" hidden>▲ +Infinity ▼ −Infinity ◆ NaN (gaps in the line)</div>';
    var empty = document.getElementById("charts-empty");
    if (empty) empty.remove();
    if (panels) panels.place(figure, key);  // in its section
    else {
      var after = Object.keys(charts).sort().find(function (k) { return k > key; });
      grid.insertBefore(figure, after ? charts[after].figure : null);
    }
    var chart = charts[key] = { key: key, figure: figure, holder: figure.querySelector(".plot"), u: null, zoom: null };
    draw(chart);
    return chart;
  }
  function draw(chart) {
    var built = chartData(chart.key);
    chart.tables = built.tables;
    chart.grouped = built.grouped;
    if (chart.u) chart.u.destroy();
    chart.holder.innerHTML = "";
    var width = Math.max(300, chart.holder.clientWidth || 600);
    chart.u = new uPlot(uplotOptions(chart.key, chart, width), built.data, chart.holder);
    caption(chart);
    chart.u.over.addEventListener("dblclick", function () { unzoom(chart); });
  }
  function refresh(chart) {  // new points, same options: keep the zoom the user chose
    if (chart.zoom) return;
    if (chart.grouped) { draw(chart); return; }  // groups may gain runs: a new chart
    var built = chartData(chart.key);
    chart.tables = built.tables;
    chart.u.setData(built.data, true);
    caption(chart);
  }
  function caption(chart) {
    var n = 0, marks = 0;
    chart.tables.forEach(function (t) { n += t.xs.length; marks += t.marks.length; });
    chart.figure.querySelector("figcaption small").textContent = n + " points shown" +
      (chart.zoom ? ", zoomed" : "");
    chart.figure.querySelector(".marks-note").hidden = marks === 0;
  }
  function drawMarks(chart, u) {
    var ctx = u.ctx, box = u.bbox, size = 5 * devicePixelRatio;
    ctx.save();
    chart.tables.forEach(function (t) {
      ctx.fillStyle = t.run.colour;
      t.marks.forEach(function (m) {
        var x = u.valToPos(m.x, "x", true);
        if (x < box.left || x > box.left + box.width) return;
        var y = m.kind === "Infinity" ? box.top + size : box.top + box.height - size;
        ctx.beginPath();
        if (m.kind === "Infinity") { ctx.moveTo(x, y - size); ctx.lineTo(x - size, y + size); ctx.lineTo(x + size, y + size); }
        else if (m.kind === "-Infinity") { ctx.moveTo(x, y + size); ctx.lineTo(x - size, y - size); ctx.lineTo(x + size, y - size); }
        else { ctx.moveTo(x, y - size); ctx.lineTo(x + size, y); ctx.lineTo(x, y + size); ctx.lineTo(x - size, y); }
        ctx.closePath();
        ctx.fill();
      });
    });
    ctx.restore();
  }
  // The legend shows, per run, its point nearest to the cursor (runs have different steps).
  function nearest(xs, x) {
    var lo = 0, hi = xs.length - 1;
    if (hi < 0) return -1;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (xs[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo > 0 && Math.abs(xs[lo - 1] - x) <= Math.abs(xs[lo] - x) ? lo - 1 : lo;
  }
  function readout(chart, u) {
    var legend = chart.figure.querySelector(".legend");
    var left = u.cursor.left;
    if (left === undefined || left < 0) {
      if (panels) panels.readout(chart.key, null);
      legend.querySelector(".legend-x").innerHTML = "&nbsp;";
      legend.querySelectorAll(".legend-value").forEach(function (el) { el.textContent = ""; });
      return;
    }
    var x = u.posToVal(left, "x");
    legend.querySelector(".legend-x").textContent = fmtX(x);
    chart.tables.forEach(function (t) {
      var cell = legend.querySelector('.legend-row[data-run="' + CSS.escape(t.run.id) + '"] .legend-value');
      var i = nearest(t.xs, x);
      if (i < 0) { cell.textContent = "—"; if (panels) panels.readout(chart.key, t.run.id, "—"); return; }
      var mark = t.marks.find(function (m) { return m.x === t.xs[i]; });
      var value = t.values[i] === null && mark ? mark.kind : fmtValue(t.values[i]);
      var smooth = t.smoothValues[i];
      var shown = options.smoothing > 0 && smooth !== null ? fmtValue(smooth) + " (raw " + value + ")" : value;
      cell.textContent = shown + " @ step " + t.steps[i];
      if (panels) panels.readout(chart.key, t.run.id, cell.textContent);
    });
  }

  // -- zoom: re-read the selected step range at full resolution ---------------------------------
  function zoomTo(chart, u) {
    if (u.select.width < 4) return;
    var lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    chart.zoom = [lo, hi];
    if (options.x !== "step") { u.setScale("x", { min: lo, max: hi }); caption(chart); return; }
    var extra = "&min_step=" + Math.floor(lo) + "&max_step=" + Math.ceil(hi);
    fetchSeries(runs.map(function (r) { return r.id; }), chart.key, extra).then(function (answer) {
      if (chart.zoom === null) return;
      var saved = series[chart.key];
      series[chart.key] = {};
      keep(chart.key, answer, false);
      var built = chartData(chart.key);
      series[chart.key] = saved;
      chart.tables = built.tables;
      chart.u.setData(built.data, false);
      chart.u.setScale("x", { min: lo, max: hi });
      caption(chart);
    }).catch(report);
  }
  function unzoom(chart) {
    chart.zoom = null;
    refresh(chart);
  }

  // -- loading and live updates -----------------------------------------------------------------
  function report(error) {
    var state = document.getElementById("live-state");
    state.textContent = String(error.message || error);
    state.classList.add("error");
  }
  function loadKey(key, ids) {
    return fetchSeries(ids, key).then(function (answer) { keep(key, answer, false); });
  }
  function liveRuns() {
    return runs.filter(function (r) { return TERMINAL.indexOf(r.status) < 0; });
  }
  // A page in a background tab does not poll; it looks again as soon as it is shown.
  var pollWaiting = false;
  function schedulePoll() {
    if (!liveRuns().length) return;
    if (document.hidden) { pollWaiting = true; return; }
    setTimeout(poll, POLL_MS);
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && pollWaiting) { pollWaiting = false; poll(); }
  });
  function poll() {
    var live = liveRuns();
    if (!live.length) { document.getElementById("live-state").textContent = ""; return; }
    if (document.hidden) { pollWaiting = true; return; }
    Promise.all(live.map(function (run) {
      // no-cache: the browser asks with the ETag it kept, and the server answers 304 (no body,
      // no keys listed) until the run changes; only then are the series asked, from the last step.
      return fetch("/api/v1/recordings/" + encodeURIComponent(run.id), { credentials: "same-origin", cache: "no-cache" })
        .then(function (a) { return a.ok ? a.json() : null; });
    })).then(function (found) {
      var work = [];
      found.forEach(function (recording, i) {
        if (!recording) return;
        var run = live[i];
        document.dispatchEvent(new CustomEvent("markov:recording", { detail: recording }));
        var changed = recording.points !== run.points;
        run.status = recording.status;
        run.points = recording.points;
        if (!changed) return;
        recording.keys.forEach(function (key) { work.push([key, run.id]); });
      });
      var byKey = {};
      work.forEach(function (w) { (byKey[w[0]] = byKey[w[0]] || []).push(w[1]); });
      return Promise.all(Object.keys(byKey).map(function (key) { return appendKey(key, byKey[key]); }));
    }).then(function () {
      var state = document.getElementById("live-state");
      state.textContent = liveRuns().length ? "live · updated " + new Date().toLocaleTimeString() : "";
      root.dataset.livePolls = String(Number(root.dataset.livePolls || 0) + 1);
    }).catch(report).then(schedulePoll);
  }
  // New points of `ids` for one key: only steps after the last one each run has on the page.
  function appendKey(key, ids) {
    var have = series[key] || {};
    var steps = ids.map(function (id) { return have[id] && have[id].lastStep; });
    var known = steps.every(function (s) { return s !== undefined; });
    var since = known ? "&since_step=" + Math.min.apply(null, steps) : "";
    return fetchSeries(ids, key, since).then(function (answer) {
      keep(key, answer, known);
      var grown = ids.some(function (id) { return series[key][id].appended > 4 * MAX_POINTS; });
      if (grown) return loadKey(key, runs.map(function (r) { return r.id; })).then(function () { show(key); });
      show(key);
    });
  }
  function show(key) {
    if (charts[key]) refresh(charts[key]); else makeChart(key);
    document.dispatchEvent(new CustomEvent("markov:series", { detail: { key: key } }));
  }
  function redrawAll() {
    Object.keys(charts).forEach(function (k) { charts[k].zoom = null; draw(charts[k]); });
  }

  // -- controls ---------------------------------------------------------------------------------
  var slider = document.getElementById("smoothing");
  viewOptions();
  slider.addEventListener("input", function () {
    options.smoothing = Number(slider.value);
    document.getElementById("smoothing-value").textContent = slider.value;
    if (view) view.set("smooth", options.smoothing || "");
    redrawAll();
  });
  document.getElementById("log-scale").addEventListener("change", function (event) {
    options.log = event.target.checked;
    if (view) view.set("log", options.log ? "1" : "");
    redrawAll();
  });
  document.getElementById("x-axis").addEventListener("change", function (event) {
    options.x = event.target.value;
    if (view) view.set("x", options.x === "step" ? "" : options.x);
    redrawAll();
  });
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) {
      var c = charts[k];
      c.u.setSize({ width: Math.max(300, c.holder.clientWidth), height: 240 });
    });
  });

  // The chart options a shared link holds (?smooth=0.9&log=1&x=wall), read once at load.
  function viewOptions() {
    if (!view) return;
    var smooth = Number(view.get("smooth"));
    if (smooth > 0 && smooth < 1) {
      options.smoothing = smooth;
      slider.value = String(smooth);
      document.getElementById("smoothing-value").textContent = slider.value;
    }
    options.log = view.get("log") === "1";
    document.getElementById("log-scale").checked = options.log;
    var x = view.get("x");
    if (x === "relative" || x === "wall") options.x = x;
    document.getElementById("x-axis").value = options.x;
  }

  window.MarkovCharts = { runs: runs, series: series, charts: charts, options: options, redraw: redrawAll };
  var ids = runs.map(function (r) { return r.id; });
  Promise.all(doc.keys.map(function (key) { return loadKey(key, ids); })).then(function () {
    var origins = [];
    Object.keys(series).forEach(function (k) {
      Object.keys(series[k]).forEach(function (id) {
        var p = series[k][id].points;
        if (p.length) origins.push(p[0][2] / 1e9);
      });
    });
    timeOrigin = origins.length ? Math.min.apply(null, origins) : 0;
    doc.keys.slice().sort().forEach(makeChart);
    if (!doc.keys.length) document.getElementById("charts-empty").textContent = "No points yet.";
    root.dataset.chartsReady = String(Object.keys(charts).length);
    document.dispatchEvent(new CustomEvent("markov:series", { detail: { key: null } }));
    schedulePoll();
  }).catch(report);
})();
