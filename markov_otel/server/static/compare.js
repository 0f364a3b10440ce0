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
    [["params", "hyperparameters"], ["summary", "summary"]].forEach(function (pair) {
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
    var width = Math.max(480, holder.clientWidth || 800), height = 300, top = 34, bottom = 40;
    var svg = el("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img",
      "aria-label": "parallel coordinates" });
    var gap = (width - 120) / (axes.length - 1);
    function xAt(i) { return 60 + i * gap; }
    function yAt(f) { return f === null ? height - bottom + 18 : top + (1 - f) * (height - top - bottom); }
    var lines = el("g", { class: "pc-lines" });
    runs.forEach(function (run, ri) {
      var d = axes.map(function (a, i) { return (i ? "L" : "M") + xAt(i).toFixed(1) + " " + yAt(a.at(a.values[ri])).toFixed(1); });
      var path = el("path", { d: d.join(" "), stroke: run.colour, class: "pc-line", "data-run": run.id });
      path.appendChild(el("title", {}, (run.name || run.id) + "\n" + axes.map(function (a) {
        return a.label + ": " + fmt(a.values[ri]);
      }).join("\n")));
      lines.appendChild(path);
    });
    svg.appendChild(lines);
    axes.forEach(function (a, i) {
      var g = el("g", { class: "pc-axis" + (i === axes.length - 1 && target.value ? " pc-target" : "") });
      g.appendChild(el("line", { x1: xAt(i), x2: xAt(i), y1: top, y2: height - bottom }));
      g.appendChild(el("text", { x: xAt(i), y: 14, "text-anchor": "middle", class: "pc-label" }, a.label));
      var ticks = a.numeric ? [[a.hi, 1], [a.lo, 0]] : a.cats.map(function (c) { return [c, a.at(c)]; });
      ticks.forEach(function (t) {
        g.appendChild(el("text", { x: xAt(i) + 4, y: yAt(t[1]) + 4, class: "pc-tick" }, fmt(t[0])));
      });
      if (a.values.some(function (v) { return a.at(v) === null; })) {
        g.appendChild(el("text", { x: xAt(i) + 4, y: yAt(null) + 4, class: "pc-tick muted" }, "n/a"));
      }
      svg.appendChild(g);
    });
    holder.appendChild(svg);
    root.dataset.parcoordsAxes = String(axes.length);
  }
  target.addEventListener("change", parcoords);
  document.addEventListener("markov:series", function () { fillTargets(); parcoords(); });
  fillTargets();
  parcoords();
})();
