// Images recorded with markov_otel.Image, at a step a slider picks: on the run page one viewer
// per key above its strip (a click on a thumbnail moves the slider there), on the compare page
// one key (a picker) with a column per run. Each column shows the run's image at the nearest
// recorded step at or below the slider's, with its step and caption. The slider is an
// <input type=range> over the steps that have images: arrow keys move to the previous or next
// of those steps, Home and End to the first and last. Data: <script id="images-data">, from
// artifact_page.image_index. Marks each viewer's data-step once it shows that step.
"use strict";
(function () {
  var data = document.getElementById("images-data");
  if (!data) return;
  var images = JSON.parse(data.textContent).images;
  var charts = window.MarkovCharts;  // names and colours of the runs (charts.js), when loaded

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function runOf(id) {
    var found = charts && charts.runs.find(function (r) { return r.id === id; });
    return found || { id: id, name: id, colour: "#888" };
  }
  function gcd(a, b) { return b ? gcd(b, a % b) : a; }
  function atOrBelow(list, step) {  // the last image whose step is <= step (list in step order)
    var lo = 0, hi = list.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (list[mid].step <= step) lo = mid + 1; else hi = mid; }
    return lo ? list[lo - 1] : null;
  }

  // One viewer of `key` in `box`, a column per run of `ids` (named when there are several).
  function viewer(box, key, ids, named, wanted) {
    var per = images[key] || {};
    var steps = Array.from(new Set([].concat.apply([], ids.map(function (id) {
      return (per[id] || []).map(function (im) { return im.step; });
    })))).sort(function (a, b) { return a - b; });
    if (!steps.length) { box.textContent = "No images of " + key + "."; return; }
    var lo = steps[0], hi = steps[steps.length - 1];
    var stride = steps.reduce(function (g, s) { return gcd(g, s - lo); }, 0) || 1;
    box.innerHTML = '<div class="image-slider"><label>step <input type="range" class="image-step" min="' + lo +
      '" max="' + hi + '" step="' + stride + '" value="' + hi + '" aria-label="step of the ' + esc(key) +
      ' images"></label> <output class="image-step-value"></output> <span class="muted">' + steps.length +
      " steps with images, " + lo + " to " + hi + "</span></div>" +
      '<div class="image-columns">' + ids.map(function (id) {
        var run = runOf(id);
        var head = named ? '<figcaption class="image-run"><span class="swatch" style="background:' + run.colour +
          '"></span>' + esc(run.name || id) + "</figcaption>" : "";
        return '<figure class="image-at-step" data-run="' + esc(id) + '">' + head +
          '<img alt="' + esc(key) + " of " + esc(run.name || id) + '"><div class="image-missing muted" hidden></div>' +
          '<figcaption class="image-caption"></figcaption></figure>';
      }).join("") + "</div>";
    var input = box.querySelector("input.image-step");
    var strip = document.querySelector('.image-strip[data-key="' + CSS.escape(key) + '"]');

    function show() {
      var at = Number(input.value);
      box.querySelector(".image-step-value").textContent = "step " + at;
      ids.forEach(function (id) {
        var figure = box.querySelector('figure[data-run="' + CSS.escape(id) + '"]');
        var img = figure.querySelector("img"), missing = figure.querySelector(".image-missing");
        var image = atOrBelow(per[id] || [], at);
        img.hidden = !image;
        missing.hidden = Boolean(image);
        if (image) {
          if (img.getAttribute("src") !== image.src) img.src = image.src;
          img.dataset.step = image.step;
          img.dataset.digest = image.digest;
          figure.querySelector(".image-caption").textContent = "step " + image.step +
            (image.caption ? " · " + image.caption : "");
        } else {
          img.removeAttribute("src");
          missing.textContent = "no image at or before step " + at;
          figure.querySelector(".image-caption").textContent = "";
        }
        if (strip) {
          strip.querySelectorAll("figure[data-step]").forEach(function (f) {
            f.classList.toggle("current", Boolean(image) && Number(f.dataset.step) === image.step);
          });
        }
      });
      box.dataset.step = String(at);
    }
    function moveTo(step) { input.value = String(step); show(); }
    input.addEventListener("input", show);
    // Arrow keys step between the recorded steps (irregular ones too), not by the stride.
    input.addEventListener("keydown", function (event) {
      var back = event.key === "ArrowLeft" || event.key === "ArrowDown";
      var ahead = event.key === "ArrowRight" || event.key === "ArrowUp";
      if (!back && !ahead) return;
      event.preventDefault();
      var at = Number(input.value), next = null;
      if (ahead) next = steps.find(function (s) { return s > at; });
      else for (var i = steps.length - 1; i >= 0; i--) if (steps[i] < at) { next = steps[i]; break; }
      if (next !== null && next !== undefined) moveTo(next);
    });
    if (strip) {
      strip.addEventListener("click", function (event) {
        var figure = event.target.closest("figure[data-step]");
        if (figure) { moveTo(Number(figure.dataset.step)); input.focus(); }
      });
    }
    moveTo(wanted !== undefined && wanted >= lo && wanted <= hi ? wanted : hi);
  }

  // The run page: a viewer per key, above its strip.
  document.querySelectorAll(".image-viewer[data-key]").forEach(function (box) {
    var key = box.dataset.key;
    viewer(box, key, Object.keys(images[key] || {}), false);
  });

  // The compare page: one key at a time, a column per run of the page (in the legend's order).
  var compare = document.getElementById("image-compare");
  var picker = document.getElementById("image-key");
  if (compare && picker) {
    var ids = charts ? charts.runs.map(function (r) { return r.id; }) : [];
    picker.innerHTML = Object.keys(images).sort().map(function (k) {
      return '<option value="' + esc(k) + '">' + esc(k) + "</option>";
    }).join("");
    var draw = function () {
      var wanted = compare.dataset.step === undefined ? undefined : Number(compare.dataset.step);
      viewer(compare, picker.value, ids, true, wanted);
    };
    picker.addEventListener("change", draw);
    draw();
  }
})();
