// The run page's header kept current: name, status, step, duration, points, times, tags, notes
// and summary, from each read of GET /api/v1/recordings/{id}. While the run is live the charts
// read it every 2 s (charts.js passes each read on as "markov:recording"); once it has ended this
// script asks by itself, every 10 s, for edits made elsewhere. Either way the browser asks with
// the ETag it has, so an unchanged run is a 304. Edit opens run_editor.js's form.
// Marks <html data-header-updates="N">.
"use strict";
(function () {
  var root = document.documentElement;
  var run = JSON.parse(document.getElementById("run-data").textContent);
  var TERMINAL = ["finished", "failed", "terminated", "interrupted", "crashed"];
  var IDLE_MS = 10000;
  var latest = null, ownPoll = 0;

  function fmtDuration(s) {
    if (s < 60) return s.toFixed(1) + " s";
    var m = Math.floor(s / 60), h = Math.floor(s / 3600);
    if (h) return h + " h " + String(m % 60).padStart(2, "0") + " min";
    return m + " min " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
  }
  function fmtTime(iso) { return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : ""; }
  function duration(r) {
    var start = Date.parse(r.started_at || r.created_at);
    var end = r.ended_at ? Date.parse(r.ended_at)
      : TERMINAL.indexOf(r.status) >= 0 ? Date.parse(r.updated_at) : Date.now();
    return isNaN(start) || isNaN(end) ? "" : fmtDuration(Math.max(0, end - start) / 1000);
  }
  function flat(values, prefix, out) {
    Object.keys(values || {}).forEach(function (k) {
      var v = values[k], name = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flat(v, name, out);
      else out[name] = Array.isArray(v) ? JSON.stringify(v) : v;
    });
    return out;
  }
  function fact(name, text) {
    var dd = document.querySelector('dd[data-fact="' + name + '"]');
    if (!dd) return;
    dd.textContent = text;
    dd.hidden = dd.previousElementSibling.hidden = !text;
  }
  function tags(list) {
    var holder = document.getElementById("run-tags");
    holder.textContent = "";
    list.forEach(function (t) {
      var span = document.createElement("span");
      span.className = "tag";
      span.textContent = t;
      holder.appendChild(span);
      holder.appendChild(document.createTextNode(" "));
    });
  }
  function summary(values) {
    var section = document.getElementById("summary");
    if (!section) return;
    var table = section.querySelector("table"), names = Object.keys(values).sort();
    table.textContent = "";
    names.forEach(function (k) {
      var row = table.insertRow(), th = document.createElement("th");
      th.textContent = k;
      row.appendChild(th);
      row.insertCell().textContent = String(values[k]);
    });
    section.hidden = names.length === 0;
  }
  function show(r) {
    if (r.recording_id !== run.id) return;
    latest = r;
    document.getElementById("run-name").textContent = r.name || r.recording_id;
    document.title = (r.name || r.recording_id) + " · markov";
    fact("status", r.status);
    if ("last_step" in r) fact("step", r.last_step === null ? "" : String(r.last_step));
    fact("duration", duration(r));
    fact("points", String(r.points));
    fact("ended", fmtTime(r.ended_at));
    fact("updated", fmtTime(r.updated_at));
    tags(r.tags || []);
    var notes = document.getElementById("run-notes");
    notes.textContent = r.notes || "";
    notes.hidden = !r.notes;
    summary(flat(r.summary, "", {}));
    root.dataset.headerUpdates = String(Number(root.dataset.headerUpdates || 0) + 1);
    if (TERMINAL.indexOf(r.status) >= 0 && !ownPoll) ownPoll = setTimeout(poll, IDLE_MS);
  }
  // Once the run has ended, charts.js stops asking: this asks, slowly, for edits made elsewhere.
  function poll() {
    ownPoll = 0;
    if (document.hidden) { ownPoll = setTimeout(poll, IDLE_MS); return; }
    fetch("/api/v1/recordings/" + encodeURIComponent(run.id), { credentials: "same-origin", cache: "no-cache" })
      .then(function (a) { return a.ok ? a.json() : null; })
      .then(function (r) { if (r) show(r); else ownPoll = setTimeout(poll, IDLE_MS); })
      .catch(function () { ownPoll = setTimeout(poll, IDLE_MS); });
  }
  document.addEventListener("markov:recording", function (event) { show(event.detail); });
  var status = document.querySelector('dd[data-fact="status"]').textContent;
  if (TERMINAL.indexOf(status) >= 0) ownPoll = setTimeout(poll, IDLE_MS);

  var edit = document.getElementById("run-edit");
  edit.hidden = false;
  edit.addEventListener("click", function () {
    var r = latest || { name: document.getElementById("run-name").textContent,
      notes: document.getElementById("run-notes").textContent,
      tags: Array.from(document.querySelectorAll("#run-tags .tag")).map(function (t) { return t.textContent; }) };
    window.MarkovEditor.open({ id: run.id, name: r.name, notes: r.notes, tags: r.tags }, run.csrf, show);
  });
})();
