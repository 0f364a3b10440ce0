// A recorded array's quantiles across the compared runs (hand-drawn SVG): per run, in its legend
// colour, the median over steps inside a p25-p75 band inside a p5-p95 band. The quantiles are
// estimated by the server from the stored buckets (GET /api/v1/quantiles). Hovering reads out,
// in the page's one legend, each run's quantiles at the step under the cursor; hovering a legend
// row brings that run forward. Marks #quantiles[data-ready=KEY] once a key is drawn.
"use strict";
(function () {
  var holder = document.getElementById("quantiles");
  var select = document.getElementById("dist-key");
  if (!holder || !select) return;
  var charts = window.MarkovCharts;
  var runs = charts.runs;
  var keys = JSON.parse(document.getElementById("distributions-data").textContent).keys;
  var legend = document.getElementById("run-legend");
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 900, HEIGHT = 300, LEFT = 64, RIGHT = 16, TOP = 10, BOTTOM = 28;

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v) {
    if (typeof v !== "number") return "";
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(parseFloat(v.toPrecision(4)));
  }
  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function niceTicks(lo, hi, n) {
    var span = hi - lo || Math.abs(hi) || 1, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  select.innerHTML = keys.map(function (k) { return '<option value="' + esc(k) + '">' + esc(k) + "</option>"; }).join("");

  function load(key) {
    var url = "/api/v1/quantiles?ids=" + runs.map(function (r) { return encodeURIComponent(r.id); }).join(",") +
      "&key=" + encodeURIComponent(key);
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (answer) {
      if (!answer.ok) throw new Error("GET " + url + " answered " + answer.status);
      return answer.json();
    });
  }

  function draw() {
    var key = select.value;
    delete holder.dataset.ready;
    load(key).then(function (doc) { if (select.value === key) render(key, doc); })
      .catch(function (error) { holder.textContent = "The quantiles could not be read: " + error.message; });
  }

  function render(key, doc) {
    var mid = doc.quantiles.indexOf(0.5), last = doc.quantiles.length - 1;
    // Each run's steps with finite quantiles: [step, [q...]]
    var lines = doc.series.map(function (s) {
      var rows = [];
      s.steps.forEach(function (step, i) {
        var v = s.values[i];
        if (v && v.every(function (x) { return typeof x === "number"; })) rows.push([step, v]);
      });
      return { id: s.recording_id, rows: rows };
    });
    var all = [].concat.apply([], lines.map(function (l) { return l.rows; }));
    holder.innerHTML = "";
    if (!all.length) { holder.textContent = "No finite values of " + key + "."; return; }
    var x0 = Math.min.apply(null, all.map(function (r) { return r[0]; }));
    var x1 = Math.max.apply(null, all.map(function (r) { return r[0]; }));
    var y0 = Math.min.apply(null, all.map(function (r) { return r[1][0]; }));
    var y1 = Math.max.apply(null, all.map(function (r) { return r[1][last]; }));
    var width = Math.max(480, Math.min(WIDTH, holder.clientWidth || WIDTH));
    var xAt = function (s) { return LEFT + (x1 === x0 ? 0.5 : (s - x0) / (x1 - x0)) * (width - LEFT - RIGHT); };
    var yAt = function (v) { return TOP + (y1 === y0 ? 0.5 : 1 - (v - y0) / (y1 - y0)) * (HEIGHT - TOP - BOTTOM); };
    var svg = el("svg", { width: width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT, role: "img",
      "aria-label": key + ": median and p5-p95 of each run over steps" });
    var axes = el("g", {});
    axes.appendChild(el("line", { x1: LEFT, x2: LEFT, y1: TOP, y2: HEIGHT - BOTTOM, class: "q-axis" }));
    axes.appendChild(el("line", { x1: LEFT, x2: width - RIGHT, y1: HEIGHT - BOTTOM, y2: HEIGHT - BOTTOM, class: "q-axis" }));
    niceTicks(y0, y1, 5).forEach(function (t) {
      axes.appendChild(el("text", { x: LEFT - 4, y: yAt(t) + 4, "text-anchor": "end", class: "q-tick" }, fmt(t)));
    });
    niceTicks(x0, x1, 6).filter(function (t) { return Number.isInteger(t); }).forEach(function (t) {
      axes.appendChild(el("text", { x: xAt(t), y: HEIGHT - 8, "text-anchor": "middle", class: "q-tick" }, String(t)));
    });
    svg.appendChild(axes);
    function band(rows, a, b) {  // a closed path: quantile a forwards, quantile b backwards
      var fwd = rows.map(function (r, i) { return (i ? "L" : "M") + xAt(r[0]).toFixed(1) + " " + yAt(r[1][a]).toFixed(1); });
      var back = rows.slice().reverse().map(function (r) { return "L" + xAt(r[0]).toFixed(1) + " " + yAt(r[1][b]).toFixed(1); });
      return fwd.concat(back).join(" ") + " Z";
    }
    lines.forEach(function (line) {
      var run = runs.find(function (r) { return r.id === line.id; }) || { colour: "#888" };
      if (!line.rows.length) return;
      var g = el("g", { class: "q-run", "data-run": line.id, "data-steps": JSON.stringify(line.rows.map(function (r) { return r[0]; })),
        "data-quantiles": JSON.stringify(line.rows.map(function (r) { return r[1]; })) });
      g.appendChild(el("path", { d: band(line.rows, 0, last), fill: run.colour, "fill-opacity": 0.12, stroke: "none", class: "q-outer" }));
      if (last >= 4) {
        g.appendChild(el("path", { d: band(line.rows, 1, last - 1), fill: run.colour, "fill-opacity": 0.25, stroke: "none", class: "q-inner" }));
      }
      var median = line.rows.map(function (r, i) { return (i ? "L" : "M") + xAt(r[0]).toFixed(1) + " " + yAt(r[1][mid]).toFixed(1); });
      g.appendChild(el("path", { d: median.join(" "), fill: "none", stroke: run.colour, "stroke-width": 2, class: "q-median" }));
      svg.appendChild(g);
    });
    var cursor = el("line", { y1: TOP, y2: HEIGHT - BOTTOM, class: "q-cursor", visibility: "hidden" });
    svg.appendChild(cursor);
    holder.appendChild(svg);
    hovering(svg, key, doc.quantiles, lines, xAt, x0, x1, width, cursor);
    holder.dataset.ready = key;
  }

  // The legend reads out each run's quantiles at the step nearest the cursor (its own steps).
  function hovering(svg, key, qs, lines, xAt, x0, x1, width, cursor) {
    var head = document.getElementById("run-legend-key");
    function clear() {
      cursor.setAttribute("visibility", "hidden");
      if (head) head.textContent = "";
      if (legend) legend.querySelectorAll(".legend-value").forEach(function (c) { c.textContent = ""; });
    }
    svg.addEventListener("pointermove", function (event) {
      var box = svg.getBoundingClientRect(), x = (event.clientX - box.left) * width / box.width;
      var step = x0 + (x - LEFT) / (width - LEFT - RIGHT) * (x1 - x0);
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); cursor.setAttribute("visibility", "visible");
      if (head) head.textContent = key + " near step " + Math.round(step);
      lines.forEach(function (line) {
        var cell = legend && legend.querySelector('li[data-run="' + CSS.escape(line.id) + '"] .legend-value');
        if (!cell) return;
        var near = line.rows.reduce(function (best, r) { return !best || Math.abs(r[0] - step) < Math.abs(best[0] - step) ? r : best; }, null);
        cell.textContent = near ? "step " + near[0] + ": median " + fmt(near[1][qs.indexOf(0.5)]) + " (p" +
          Math.round(qs[0] * 100) + " " + fmt(near[1][0]) + ", p" + Math.round(qs[qs.length - 1] * 100) + " " +
          fmt(near[1][qs.length - 1]) + ")" : "";
      });
    });
    svg.addEventListener("pointerleave", clear);
  }

  if (legend) {
    legend.addEventListener("mouseover", function (event) {
      var li = event.target.closest("li[data-run]");
      holder.classList.toggle("has-focus", Boolean(li));
      holder.querySelectorAll(".q-run").forEach(function (g) { g.classList.toggle("focused", Boolean(li) && g.dataset.run === li.dataset.run); });
    });
    legend.addEventListener("mouseleave", function () { holder.classList.remove("has-focus"); });
  }
  select.addEventListener("change", draw);
  draw();
})();
