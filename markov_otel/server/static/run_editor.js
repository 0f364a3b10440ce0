// The form that edits a run's name, tags and notes, on the runs table and on the run page:
// PATCH /api/v1/recordings/{id} with the page's CSRF token in X-Markov-CSRF (the sign-in cookie
// writes only with it; see page_writes.py). window.MarkovEditor.open(run, csrf, done).
"use strict";
(function () {
  var form = document.getElementById("run-editor");
  var note = document.getElementById("run-editor-note");
  var current = null;  // {id, csrf, done}

  function open(run, csrf, done) {
    current = { id: run.id, csrf: csrf, done: done };
    form.elements.name.value = run.name || "";
    form.elements.tags.value = (run.tags || []).join(" ");
    form.elements.notes.value = run.notes || "";
    note.textContent = "";
    form.dataset.run = run.id;
    form.hidden = false;
    form.elements.name.focus();
  }
  function close() {
    form.hidden = true;
    current = null;
  }
  function save(event) {
    event.preventDefault();
    if (!current) return;
    var editing = current;
    var body = { notes: form.elements.notes.value,
      tags: form.elements.tags.value.split(/\s+/).filter(Boolean) };
    var name = form.elements.name.value.trim();
    if (name) body.name = name;
    var headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (editing.csrf) headers["X-Markov-CSRF"] = editing.csrf;
    fetch("/api/v1/recordings/" + encodeURIComponent(editing.id), {
      method: "PATCH", credentials: "same-origin", headers: headers, body: JSON.stringify(body),
    }).then(function (answer) {
      return answer.json().then(function (doc) {
        if (!answer.ok) throw new Error(doc.error || "PATCH answered " + answer.status);
        close();
        if (editing.done) editing.done(doc);
      });
    }).catch(function (error) { note.textContent = String(error.message || error); });
  }
  form.addEventListener("submit", save);
  form.elements.cancel.addEventListener("click", close);
  window.MarkovEditor = { open: open, close: close };
})();
