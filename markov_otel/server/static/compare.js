// The comparison's own parts: the run legend, the hyperparameter table that highlights values
// that differ, and parallel coordinates (hand-drawn SVG; uPlot does not draw them) from the
// hyperparameters to a chosen summary value or last metric value. Charts come from charts.js.
"use strict";
(function () {
  var root = document.documentElement;
  var charts = window.MarkovCharts;
  var runs = charts.runs;
  var SVG = "http://www.w3.org/2000/svg";

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    if (typeof v !== "number" || Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-4 || a >= 1e7) ? v.toExponential(3) : String(parseFloat(v.toPrecision(6)));
  }
  function namesOf(field) {
    var seen = new Set();
    runs.forEach(function (r) { Object.keys(r[field]).forEach(function (k) { seen.add(k); }); });
    return Array.from(seen).sort();
  }
  function differs(field, name) {
    var first = JSON.stringify(runs[0][field][name]);
    return runs.some(function (r) { return JSON.stringify(r[field][name]) !== first; });
  }

  // -- legend and the parameter table -----------------------------------------------------------
  document.getElementById("run-legend").innerHTML = runs.map(function (r) {
    return '<li data-run="' + esc(r.id) + '"><span class="swatch" style="background:' + r.colour +
      '"></span><a href="/recordings/' + esc(r.id) + '">' + esc(r.name || r.id) + '</a> <code class="muted">' +
      esc(r.id.slice(0, 8)) + '</code> <span class="status status-' + esc(r.status) + '">' + esc(r.status) +
      '</span> <span class="legend-value"></span></li>';
  }).join("");

  function paramTable() {
    var only = document.getElementById("only-diff").checked;
    var head = "<thead><tr><th></th>" + runs.map(function (r) {
      return '<th><span class="swatch" style="background:' + r.colour + '"></span>' + esc(r.name || r.id) + "</th>";
    }).join("") + "</tr></thead>";
    var body = "";
    [["params", "hyperparameters"], ["summary", "summary"], ["metadata", "metadata"]].forEach(function (pair) {
      var rows = namesOf(pair[0]).map(function (name) {
        var diff = differs(pair[0], name);
        if (only && !diff) return "";
        return '<tr class="' + (diff ? "differs" : "same") + '" data-name="' + esc(name) + '"><th>' + esc(name) + "</th>" +
          runs.map(function (r) { return "<td>" + esc(fmt(r[pair[0]][name])) + "</td>"; }).join("") + "</tr>";
      }).join("");
      if (rows) body += '<tbody><tr class="group"><th colspan="' + (runs.length + 1) + '">' + pair[1] + "</th></tr>" + rows + "</tbody>";
    });
    document.getElementById("params-table").innerHTML = head + (body || "<tbody><tr><td>No hyperparameters.</td></tr></tbody>");
  }
  document.getElementById("only-diff").addEventListener("change", paramTable);
  paramTable();

  // -- parallel coordinates ---------------------------------------------------------------------
  var target = document.getElementById("pc-target");
  function targets() {
    var list = namesOf("summary").map(function (n) { return { id: "summary." + n, label: "summary " + n }; });
    Object.keys(charts.series).sort().forEach(function (key) {
      list.push({ id: "last." + key, label: "last " + key });
    });
    return list;
  }
  function targetValue(run, id) {
    if (id.indexOf("summary.") === 0) return run.summary[id.slice(8)];
    var s = charts.series[id.slice(5)];
    var last = s && s[run.id] && s[run.id].last;
    return last ? last[1] : undefined;
  }
  function fillTargets() {
    var chosen = target.value;
    var list = targets();
    target.innerHTML = list.map(function (t) {
      return '<option value="' + esc(t.id) + '">' + esc(t.label) + "</option>";
    }).join("");
    if (list.some(function (t) { return t.id === chosen; })) target.value = chosen;
    else if (list.length) target.value = (list.find(function (t) { return t.id.indexOf("last.") === 0; }) || list[0]).id;
  }
  function axis(label, values) {
    var present = values.filter(function (v) { return v !== undefined && v !== null && v !== ""; });
    var numeric = present.length > 0 && present.every(function (v) { return typeof v === "number"; });
    if (numeric) {
      var lo = Math.min.apply(null, present), hi = Math.max.apply(null, present);
      // Learning rates and the like span decades: a log axis when every value is positive.
      var log = lo > 0 && hi / lo >= 100, f = log ? Math.log : function (v) { return v; };
      return { label: label + (log ? " (log)" : ""), values: values, numeric: true, lo: lo, hi: hi,
        at: function (v) { return typeof v === "number" ? (hi === lo ? 0.5 : (f(v) - f(lo)) / (f(hi) - f(lo))) : null; } };
    }
    var cats = Array.from(new Set(present.map(String))).sort();
    return { label: label, values: values, numeric: false, cats: cats,
      at: function (v) {
        if (v === undefined || v === null || v === "") return null;
        return cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1);
      } };
  }
  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Lines coloured by the chosen value (viridis, low to high); axis brushing keeps the runs
  // inside every brushed range and fades the rest, here, in the legend and in the table.
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colourAt(f) {
    if (f === null || f === undefined || isNaN(f)) return "#999";
    var at = Math.max(0, Math.min(1, f)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(at));
    var t = at - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * t); }).join(",") + ")";
  }
  var brushes = {};  // axis label -> [lo, hi] in axis fractions (0 bottom, 1 top)
  function inside(axes, ri) {
    return axes.every(function (a) {
      var range = brushes[a.label];
      if (!range) return true;
      var f = a.at(a.values[ri]);
      return f !== null && f >= range[0] && f <= range[1];
    });
  }
  function applyBrush(axes) {
    var kept = new Set();
    runs.forEach(function (run, ri) { if (inside(axes, ri)) kept.add(run.id); });
    document.querySelectorAll("#parcoords path.pc-line").forEach(function (p) {
      p.classList.toggle("pc-out", !kept.has(p.dataset.run));
    });
    document.querySelectorAll("#run-legend li[data-run]").forEach(function (li) {
      li.classList.toggle("pc-out", !kept.has(li.dataset.run));
    });
    runs.forEach(function (run, ri) {
      document.querySelectorAll("#params-table tr > :nth-child(" + (ri + 2) + ")").forEach(function (c) {
        c.classList.toggle("pc-out", !kept.has(run.id));
      });
    });
    root.dataset.parcoordsKept = String(kept.size);
  }
  function parcoords() {
    var holder = document.getElementById("parcoords");
    var names = namesOf("params");
    var shown = names.filter(function (n) { return differs("params", n); });
    if (!shown.length) shown = names;
    shown = shown.slice(0, 12);
    var axes = shown.map(function (n) { return axis(n, runs.map(function (r) { return r.params[n]; })); });
    if (target.value) {
      axes.push(axis(target.options[target.selectedIndex].text,
        runs.map(function (r) { return targetValue(r, target.value); })));
    }
    holder.innerHTML = "";
    if (axes.length < 2) { holder.textContent = "Needs at least one hyperparameter and a value to compare."; return; }
    var width = Math.max(480, holder.clientWidth || 800), height = 320, top = 44, bottom = 40;
    var svg = el("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "parallel coordinates" });
    var left = 70, right = 110;  // room for the first axis' labels and the last one's ticks
    var gap = (width - left - right) / (axes.length - 1);
    function xAt(i) { return left + i * gap; }
    function yAt(f) { return f === null ? height - bottom + 18 : top + (1 - f) * (height - top - bottom); }
    var lines = el("g", { class: "pc-lines" });
    var by = target.value ? axes[axes.length - 1] : null;
    var coloured = by && by.numeric;
    runs.forEach(function (run, ri) {
      var d = axes.map(function (a, i) { return (i ? "L" : "M") + xAt(i).toFixed(1) + " " + yAt(a.at(a.values[ri])).toFixed(1); });
      var stroke = coloured ? colourAt(by.at(by.values[ri])) : run.colour;
      var path = el("path", { d: d.join(" "), stroke: stroke, class: "pc-line", "data-run": run.id });
      path.appendChild(el("title", {}, (run.name || run.id) + "\n" + axes.map(function (a) {
        return a.label + ": " + fmt(a.values[ri]);
      }).join("\n")));
      lines.appendChild(path);
    });
    svg.appendChild(lines);
    axes.forEach(function (a, i) {
      var g = el("g", { class: "pc-axis" + (i === axes.length - 1 && target.value ? " pc-target" : "") });
      g.appendChild(el("line", { x1: xAt(i), x2: xAt(i), y1: top, y2: height - bottom }));
      var anchor = i === 0 ? "start" : i === axes.length - 1 ? "end" : "middle";
      var label = el("text", { x: xAt(i) + (i === 0 ? -left + 4 : i === axes.length - 1 ? right - 4 : 0),
        y: 14 + (i % 2) * 14, "text-anchor": anchor, class: "pc-label" }, a.label);
      label.appendChild(el("title", {}, a.label));
      g.appendChild(label);
      var ticks = a.numeric ? [[a.hi, 1], [a.lo, 0]] : a.cats.map(function (c) { return [c, a.at(c)]; });
      ticks.forEach(function (t) {
        g.appendChild(el("text", { x: xAt(i) + 4, y: yAt(t[1]) + 4, class: "pc-tick" }, fmt(t[0])));
      });
      // A brush: drag along the axis to keep the runs in that range; double-click clears it.
      var range = brushes[a.label];
      if (range) {
        g.appendChild(el("rect", { x: xAt(i) - 8, width: 16, y: yAt(range[1]), height: yAt(range[0]) - yAt(range[1]),
          class: "pc-brush" }));
      }
      var grip = el("rect", { x: xAt(i) - 12, width: 24, y: top, height: height - top - bottom,
        class: "pc-grip", "data-axis": a.label });
      g.appendChild(grip);
      if (a.values.some(function (v) { return a.at(v) === null; })) {
        g.appendChild(el("text", { x: xAt(i) + 4, y: yAt(null) + 4, class: "pc-tick muted" }, "n/a"));
      }
      svg.appendChild(g);
    });
    if (coloured) colourBar(svg, by, width);
    holder.appendChild(svg);
    brushing(svg, axes, yAt, top, height - bottom);
    applyBrush(axes);
    root.dataset.parcoordsAxes = String(axes.length);
  }
  function colourBar(svg, by, width) {
    var defs = el("defs", {}), grad = el("linearGradient", { id: "pc-scale" });
    VIRIDIS.forEach(function (c, i) {
      grad.appendChild(el("stop", { offset: (i / (VIRIDIS.length - 1) * 100) + "%", "stop-color": "rgb(" + c.join(",") + ")" }));
    });
    defs.appendChild(grad);
    svg.appendChild(defs);
    var x = width - 190, y = 306;  // the highest value's label ends at the right edge
    svg.appendChild(el("text", { x: 4, y: y + 8, class: "pc-tick" }, "colour: " + by.label));
    svg.appendChild(el("rect", { x: x, y: y, width: 120, height: 8, fill: "url(#pc-scale)", class: "pc-scale" }));
    svg.appendChild(el("text", { x: x - 4, y: y + 8, "text-anchor": "end", class: "pc-tick" }, fmt(by.lo)));
    svg.appendChild(el("text", { x: width - 4, y: y + 8, "text-anchor": "end", class: "pc-tick" }, fmt(by.hi)));
  }
  function brushing(svg, axes, yAt, top, bottom) {
    var fraction = function (y) { return Math.max(0, Math.min(1, (bottom - y) / (bottom - top))); };
    var point = function (event) {
      var box = svg.getBoundingClientRect(), scale = svg.viewBox.baseVal.height / box.height;
      return (event.clientY - box.top) * scale;
    };
    svg.querySelectorAll(".pc-grip").forEach(function (grip) {
      var label = grip.dataset.axis, start = null;
      grip.addEventListener("pointerdown", function (event) {
        start = fraction(point(event));
        grip.setPointerCapture(event.pointerId);
      });
      grip.addEventListener("pointerup", function (event) {
        if (start === null) return;
        var end = fraction(point(event)), moved = Math.abs(end - start) > 0.02;
        if (moved) brushes[label] = [Math.min(start, end), Math.max(start, end)];
        start = null;
        if (moved) parcoords();  // a click is not a brush (and a double-click clears one)
      });
      grip.addEventListener("dblclick", function () { delete brushes[label]; parcoords(); });
    });
  }
  target.addEventListener("change", parcoords);
  document.addEventListener("markov:series", function () { fillTargets(); parcoords(); });
  fillTargets();
  parcoords();
})();
