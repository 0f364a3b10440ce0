// The runs table: one row per run, sort by any column, filter by text/status/value, choose the
// visible columns, select runs and open the comparison; edit a run's name, tags and notes
// (run_editor.js). Live: every 2 s (not while the tab is hidden) it asks GET /api/v1/runs-table
// for the rows changed since its cursor, with the ETag it has, so an unchanged table costs a 304;
// a change (a batch, a finished run, a new run, an edit on another page, a delete) brings only
// those rows and redraws, keeping the view. Columns are those of the runs at load. Marks <html data-runs-ready="N"> and data-runs-polls="N".
"use strict";
(function () {
  var root = document.documentElement;
  window.addEventListener("error", function (event) { root.dataset.jsError = String(event.message); });

  var doc = JSON.parse(document.getElementById("runs-data").textContent);
  var runs = doc.runs;
  var storeKey = "markov.columns:" + location.pathname;
  var state = { sort: "start", dir: -1, selected: new Set() };
  var view = window.MarkovView;  // view.js: the table's view in the URL (sort, filter, columns)

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function fmtNumber(v) {
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-4 || a >= 1e7) ? v.toExponential(3) : String(parseFloat(v.toPrecision(6)));
  }
  function fmt(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "number" ? fmtNumber(v) : String(v);
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return s.toFixed(1) + "s";
    var m = Math.floor(s / 60), h = Math.floor(m / 60);
    if (h) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return m + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  }
  function fmtStart(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return iso || "";
    function p(n) { return String(n).padStart(2, "0"); }
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  // -- columns: fixed ones, then every hyperparameter and summary name seen in any run --------
  function keysOf(field) {
    var seen = new Set();
    runs.forEach(function (r) { Object.keys(r[field]).forEach(function (k) { seen.add(k); }); });
    return Array.from(seen).sort();
  }
  var columns = [
    { id: "name", label: "name", group: "run", get: function (r) { return r.name || r.id; } },
    { id: "status", label: "status", group: "run", get: function (r) { return r.status; } },
    { id: "start", label: "start", group: "run", get: function (r) { return r.start; }, show: fmtStart },
    { id: "duration", label: "duration", group: "run", get: function (r) { return r.duration; }, show: fmtDuration },
    { id: "points", label: "points", group: "run", get: function (r) { return r.points; } },
  ];
  columns.push({ id: "tags", label: "tags", group: "run", get: function (r) { return (r.tags || []).join(" "); },
    hidden: !runs.some(function (r) { return r.tags && r.tags.length; }) });
  if (!doc.project) columns.push({ id: "project", label: "project", group: "run", get: function (r) { return r.project; } });
  columns.push({ id: "id", label: "id", group: "run", get: function (r) { return r.id; }, hidden: true });
  [["params", "hyperparameters"], ["summary", "summary"], ["metadata", "metadata"]].forEach(function (pair) {
    keysOf(pair[0]).forEach(function (k) {
      columns.push({ id: pair[0] + "." + k, label: k, group: pair[1],
        get: function (r) { return r[pair[0]][k]; } });
    });
  });
  // Metric columns: last, min and max of any key, read when first shown (GET /api/v1/series:
  // each bucket keeps its smallest and largest point, so min and max are exact at any size).
  var metrics = {};  // key -> run id -> {last, min, max}
  var STATS = ["last", "min", "max"];
  (doc.keys || []).forEach(function (key) {
    STATS.forEach(function (stat) {
      columns.push({ id: stat + "." + key, label: key, group: stat, metric: key, hidden: true,
        get: function (r) { var m = metrics[key] && metrics[key][r.id]; return m ? m[stat] : undefined; } });
    });
  });
  function loadMetrics() {
    var wanted = Array.from(new Set(columns.filter(function (c) { return c.metric && visible.has(c.id) && !metrics[c.metric]; })
      .map(function (c) { return c.metric; })));
    if (!wanted.length) return;
    wanted.forEach(function (key) { metrics[key] = {}; });
    var ids = runs.map(function (r) { return r.id; }), asks = [];
    wanted.forEach(function (key) {
      for (var i = 0; i < ids.length; i += 100) {
        var url = "/api/v1/series?max_points=10&key=" + encodeURIComponent(key) + "&ids=" +
          ids.slice(i, i + 100).map(encodeURIComponent).join(",");
        asks.push(fetch(url, { credentials: "same-origin" }).then(function (a) {
          if (!a.ok) throw new Error("GET " + url + " answered " + a.status);
          return a.json();
        }).then(function (answer) {
          answer.series.forEach(function (s) {
            if (!s.last) return;
            var values = s.points.map(function (p) { return p[1]; }).filter(function (v) { return typeof v === "number"; });
            metrics[answer.key][s.recording_id] = { last: s.last[1],
              min: values.length ? Math.min.apply(null, values) : undefined,
              max: values.length ? Math.max.apply(null, values) : undefined };
          });
        }));
      }
    });
    Promise.all(asks).then(render).catch(function (error) {
      document.getElementById("runs-count").textContent = String(error.message || error);
    });
  }
  var visible = new Set();
  var saved = null;
  try { saved = JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (e) { saved = null; }
  var linked = view ? view.list("col") : [];  // a shared link's columns win over this browser's
  if (linked.length) saved = linked;
  columns.forEach(function (c, i) {
    var on = saved ? saved.indexOf(c.id) >= 0 : !c.hidden && i < 40;
    if (on || c.id === "name") visible.add(c.id);
  });

  // -- filter: plain words match any cell; NAME OP VALUE compares one column -------------------
  var OP = /^(.+?)(>=|<=|!=|=|>|<|~)(.*)$/;
  function column(name) {
    var lower = name.toLowerCase();
    return columns.find(function (c) { return c.id.toLowerCase() === lower; }) ||
      columns.find(function (c) { return c.label.toLowerCase() === lower; });
  }
  function compareValues(a, b) {
    var x = typeof a === "number" ? a : parseFloat(a), y = parseFloat(b);
    if (!isNaN(x) && !isNaN(y) && String(b).trim() !== "") return x < y ? -1 : x > y ? 1 : 0;
    return String(a).toLowerCase().localeCompare(String(b).toLowerCase());
  }
  // Columns named like `name` but for punctuation and case: val_acc finds val/acc.
  function lookalikes(name) {
    var bare = function (t) { return t.toLowerCase().replace(/[^a-z0-9]/g, ""); };
    var want = bare(name);
    return columns.filter(function (c) {
      return want && (bare(c.label) === want || bare(c.id) === want || bare(c.label).indexOf(want) >= 0);
    }).map(function (c) { return c.id; }).slice(0, 5);
  }
  var unknown = [];  // NAME OP VALUE tokens whose NAME is no column: said, and left out
  function matcher(text, status) {
    var tests = [];
    unknown = [];
    text.trim().split(/\s+/).filter(Boolean).forEach(function (token) {
      var m = OP.exec(token), col = m && column(m[1]);
      if (m && !col) { unknown.push(m[1]); return; }
      if (col) {
        var op = m[2], want = m[3];
        tests.push(function (r) {
          var v = col.get(r);
          if (v === null || v === undefined || v === "") return op === "!=";
          if (op === "~") return String(v).toLowerCase().indexOf(want.toLowerCase()) >= 0;
          var c = compareValues(v, want);
          return { "=": c === 0, "!=": c !== 0, ">": c > 0, "<": c < 0, ">=": c >= 0, "<=": c <= 0 }[op];
        });
      } else {
        var word = token.toLowerCase();
        tests.push(function (r) { return haystack(r).indexOf(word) >= 0; });
      }
    });
    if (status) tests.push(function (r) { return r.status === status; });
    // Archived runs are out of the way unless asked for (and then only they are shown).
    var archived = document.getElementById("runs-archived").checked;
    tests.push(function (r) { return Boolean(r.archived) === archived; });
    return function (r) { return tests.every(function (t) { return t(r); }); };
  }
  var hay = new Map();
  function haystack(r) {
    if (!hay.has(r.id)) {
      var parts = [r.id, r.name, r.status, r.project].concat(r.tags || []);
      ["params", "summary"].forEach(function (f) {
        Object.keys(r[f]).forEach(function (k) { parts.push(k + "=" + fmt(r[f][k])); });
      });
      hay.set(r.id, parts.join(" ").toLowerCase());
    }
    return hay.get(r.id);
  }

  // -- sort: missing values last in either direction -----------------------------------------
  function sorted(list) {
    var col = columns.find(function (c) { return c.id === state.sort; }) || columns[0];
    return list.slice().sort(function (a, b) {
      var x = col.get(a), y = col.get(b);
      var xm = x === null || x === undefined || x === "", ym = y === null || y === undefined || y === "";
      if (xm || ym) return xm === ym ? 0 : xm ? 1 : -1;
      var c = typeof x === "number" && typeof y === "number" ? x - y
        : String(x).localeCompare(String(y), undefined, { numeric: true });
      return c * state.dir;
    });
  }

  // -- render ---------------------------------------------------------------------------------
  var table = document.getElementById("runs-table");
  var filterBox = document.getElementById("runs-filter");
  var statusBox = document.getElementById("runs-status");
  var shown = [];
  function cell(col, r) {
    var v = col.get(r);
    if (col.id === "name") return '<a href="/recordings/' + esc(r.id) + '">' + esc(v) + "</a>";
    if (col.id === "project" && v) return '<a href="/projects/' + esc(encodeURIComponent(v)) + '">' + esc(v) + "</a>";
    if (col.id === "status") return '<span class="status status-' + esc(v) + '">' + esc(v) + "</span>";
    return esc(col.show ? col.show(v) : fmt(v));
  }
  function saveView() {
    if (!view) return;
    view.set("q", filterBox.value.trim());
    view.set("status", statusBox.value);
    view.set("archived", document.getElementById("runs-archived").checked ? "1" : "");
    view.set("sort", state.sort === "start" && state.dir < 0 ? "" : state.sort);
    view.set("dir", state.sort === "start" && state.dir < 0 ? "" : state.dir > 0 ? "asc" : "desc");
  }
  function render() {
    saveView();
    var cols = columns.filter(function (c) { return visible.has(c.id); });
    shown = sorted(runs.filter(matcher(filterBox.value, statusBox.value)));
    var groups = [], head = '<tr><th rowspan="2" class="select"><input type="checkbox" id="select-all" aria-label="select all shown"></th>';
    cols.forEach(function (c) {
      var last = groups[groups.length - 1];
      if (last && last.name === c.group) last.span += 1; else groups.push({ name: c.group, span: 1 });
    });
    groups.forEach(function (g) { head += '<th colspan="' + g.span + '" class="group">' + esc(g.name) + "</th>"; });
    head += "</tr><tr>";
    cols.forEach(function (c) {
      var mark = state.sort === c.id ? (state.dir > 0 ? " ▲" : " ▼") : "";
      head += '<th class="sortable" data-col="' + esc(c.id) + '" title="sort by ' + esc(c.id) + '">' + esc(c.label) + mark + "</th>";
    });
    table.tHead.innerHTML = head + "</tr>";
    var rows = shown.map(function (r) {
      var on = state.selected.has(r.id) ? " checked" : "";
      return '<tr data-id="' + esc(r.id) + '"><td class="select"><input type="checkbox" class="pick" data-id="' +
        esc(r.id) + '" aria-label="select ' + esc(r.name || r.id) + '"' + on + '><button type="button" class="edit" data-edit="' +
        esc(r.id) + '" title="edit name, tags and notes" aria-label="edit ' + esc(r.name || r.id) + '">✎</button></td>' +
        cols.map(function (c) { return "<td>" + cell(c, r) + "</td>"; }).join("") + "</tr>";
    });
    table.tBodies[0].innerHTML = rows.join("");
    markBest(cols);
    sayUnknown();
    loadMetrics();
    document.querySelector("#runs .empty").hidden = runs.length > 0;
    updateSelection();
    root.dataset.runsReady = String(shown.length);
  }
  // The best value of each value column, marked: the lowest for losses, errors and times, else
  // the highest.
  var LOWER = /loss|err|perplex|mse|mae|rmse|time|duration|latency|wer|cer/i;
  function markBest(cols) {
    cols.forEach(function (c, ci) {
      if (!(c.metric || c.group === "summary")) return;
      var values = shown.map(function (r) { return c.get(r); });
      var numbers = values.filter(function (v) { return typeof v === "number" && isFinite(v); });
      if (numbers.length < 2) return;
      var best = LOWER.test(c.label) ? Math.min.apply(null, numbers) : Math.max.apply(null, numbers);
      shown.forEach(function (r, ri) {
        if (values[ri] === best) table.tBodies[0].rows[ri].cells[ci + 1].classList.add("best");
      });
    });
  }
  // What the table shows, as CSV: text that a spreadsheet would run as a formula gets a leading
  // apostrophe (OWASP), fields with commas, quotes or line breaks are quoted.
  function csvCell(v) {
    var text = v === null || v === undefined ? "" : typeof v === "number" ? String(v) : String(v);
    if (typeof v !== "number" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function downloadCsv() {
    var cols = columns.filter(function (c) { return visible.has(c.id); });
    var lines = [["id"].concat(cols.map(function (c) { return c.id; })).map(csvCell).join(",")];
    shown.forEach(function (r) {
      lines.push([r.id].concat(cols.map(function (c) { return c.get(r); })).map(csvCell).join(","));
    });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    link.download = (doc.project || "runs") + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }
  document.getElementById("runs-csv").addEventListener("click", downloadCsv);
  function sayUnknown() {
    var note = document.getElementById("runs-filter-note");
    note.hidden = unknown.length === 0;
    note.textContent = unknown.map(function (name) {
      var like = lookalikes(name);
      return "no column " + JSON.stringify(name) + " (left out of the filter)" +
        (like.length ? "; did you mean " + like.join(", ") + "?" : "; see Columns for the names");
    }).join(". ");
  }
  function updateSelection() {
    var n = state.selected.size, button = document.getElementById("runs-compare");
    button.disabled = n === 0;
    button.textContent = n ? "Compare " + n + (n === 1 ? " run" : " runs") : "Compare";
    document.getElementById("runs-count").textContent =
      shown.length + " of " + runs.length + " runs" + (n ? ", " + n + " selected" : "");
    var all = document.getElementById("select-all");
    if (all) all.checked = shown.length > 0 && shown.every(function (r) { return state.selected.has(r.id); });
  }

  // -- controls ---------------------------------------------------------------------------------
  Array.from(new Set(runs.map(function (r) { return r.status; }))).sort().forEach(function (s) {
    var o = document.createElement("option"); o.value = s; o.textContent = s; statusBox.appendChild(o);
  });
  var chooser = document.getElementById("runs-columns");
  chooser.innerHTML = columns.map(function (c) {
    return '<label><input type="checkbox" data-col="' + esc(c.id) + '"' + (visible.has(c.id) ? " checked" : "") +
      (c.id === "name" ? " disabled" : "") + "> " + esc(c.group === "run" ? c.label : c.id) + "</label>";
  }).join("");
  chooser.addEventListener("change", function (event) {
    var id = event.target.dataset.col;
    if (event.target.checked) visible.add(id); else visible.delete(id);
    try { localStorage.setItem(storeKey, JSON.stringify(Array.from(visible))); } catch (e) { /* private mode */ }
    if (view) view.set("col", columns.filter(function (c) { return visible.has(c.id); }).map(function (c) { return c.id; }));
    render();
  });
  var pending = 0;
  filterBox.addEventListener("input", function () { clearTimeout(pending); pending = setTimeout(render, 120); });
  statusBox.addEventListener("change", render);
  document.getElementById("runs-archived").addEventListener("change", render);
  table.addEventListener("click", function (event) {
    var edit = event.target.closest("button.edit");
    if (edit) {
      var run = runs.find(function (r) { return r.id === edit.dataset.edit; });
      if (run && window.MarkovEditor) window.MarkovEditor.open(run, doc.csrf, function () { poll(); });
      return;
    }
    var th = event.target.closest("th.sortable");
    if (!th) return;
    state.dir = state.sort === th.dataset.col ? -state.dir : 1;
    state.sort = th.dataset.col;
    render();
  });
  table.addEventListener("change", function (event) {
    var t = event.target;
    if (t.id === "select-all") {
      shown.forEach(function (r) { if (t.checked) state.selected.add(r.id); else state.selected.delete(r.id); });
      table.querySelectorAll("input.pick").forEach(function (box) { box.checked = t.checked; });
    } else if (t.classList.contains("pick")) {
      if (t.checked) state.selected.add(t.dataset.id); else state.selected.delete(t.dataset.id);
    }
    updateSelection();
  });
  document.getElementById("runs-compare").addEventListener("click", function () {
    var ids = shown.filter(function (r) { return state.selected.has(r.id); }).map(function (r) { return r.id; });
    state.selected.forEach(function (id) { if (ids.indexOf(id) < 0) ids.push(id); });
    location.href = "/compare?ids=" + ids.map(encodeURIComponent).join(",");
  });
  if (view) {  // a shared link's view
    filterBox.value = view.get("q") || "";
    if (view.get("status")) statusBox.value = view.get("status");
    document.getElementById("runs-archived").checked = view.get("archived") === "1";
    var by = view.get("sort");
    if (by && columns.some(function (c) { return c.id === by; })) {
      state.sort = by;
      state.dir = view.get("dir") === "asc" ? 1 : -1;
    }
  }
  render();

  // -- live: the rows again when something changed (an unchanged table is a 304) ---------------
  var POLL_MS = 2000, timer = 0, asking = false, lastTag = null, waiting = false;
  var cursor = doc.cursor || "";  // the latest change the rows have: the server sends what is newer
  function url() {
    var query = [];
    if (doc.project) query.push("project_id=" + encodeURIComponent(doc.project));
    if (cursor) query.push("since=" + encodeURIComponent(cursor));
    return "/api/v1/runs-table" + (query.length ? "?" + query.join("&") : "");
  }
  function merge(fresh) {
    if (!fresh.delta) return fresh.runs;
    var byId = new Map(runs.map(function (r) { return [r.id, r]; }));
    fresh.runs.forEach(function (r) { byId.set(r.id, r); });
    return fresh.ids.filter(function (id) { return byId.has(id); }).map(function (id) { return byId.get(id); });
  }
  function poll() {
    clearTimeout(timer);
    if (document.hidden) { waiting = true; return; }
    if (asking) return;
    asking = true;
    var asked = url();
    fetch(asked, { credentials: "same-origin", cache: "no-cache", headers: { Accept: "application/json" } })
      .then(function (answer) {
        if (!answer.ok) throw new Error("GET " + asked + " answered " + answer.status);
        var tag = answer.headers.get("ETag");
        if (tag && tag === lastTag) return;  // the browser's kept copy after a 304: nothing new
        lastTag = tag;
        return answer.json().then(function (fresh) {
          runs = merge(fresh);
          cursor = fresh.cursor || cursor;
          hay.clear();
          metrics = {};
          render();
        });
      })
      .catch(function (error) { document.getElementById("runs-count").textContent = String(error.message || error); })
      .then(function () {
        asking = false;
        root.dataset.runsPolls = String(Number(root.dataset.runsPolls || 0) + 1);
        timer = setTimeout(poll, POLL_MS);
      });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && waiting) { waiting = false; poll(); }
  });
  timer = setTimeout(poll, POLL_MS);
})();
