// Hover readout for the server-drawn SVG charts; marks <html data-charts-ready="N"> when wired.
"use strict";
(function () {
  window.addEventListener("error", function (event) {
    document.documentElement.dataset.jsError = String(event.message);
  });
  function wire(svg) {
    var points = JSON.parse(svg.dataset.points || "[]");
    if (!points.length) return false;
    var box = svg.viewBox.baseVal, pad = 40;
    var x0 = Number(svg.dataset.x0), x1 = Number(svg.dataset.x1);
    var y0 = Number(svg.dataset.y0), y1 = Number(svg.dataset.y1);
    var cursor = svg.querySelector(".cursor");
    var readout = svg.parentNode.querySelector(".readout");
    function sx(s) { return pad + (s - x0) * (box.width - 2 * pad) / ((x1 - x0) || 1); }
    function sy(v) { return box.height - pad - (v - y0) * (box.height - 2 * pad) / ((y1 - y0) || 1); }
    svg.addEventListener("mousemove", function (event) {
      var rect = svg.getBoundingClientRect();
      var x = (event.clientX - rect.left) * box.width / rect.width;
      var best = points[0];
      for (var i = 1; i < points.length; i++) {
        if (Math.abs(sx(points[i][0]) - x) < Math.abs(sx(best[0]) - x)) best = points[i];
      }
      cursor.setAttribute("cx", sx(best[0]));
      cursor.setAttribute("cy", sy(best[1]));
      readout.textContent = "step " + best[0] + ": " + best[1];
    });
    return true;
  }
  function start() {
    var wired = 0;
    document.querySelectorAll("figure.chart svg").forEach(function (svg) {
      if (wire(svg)) wired += 1;
    });
    document.documentElement.dataset.chartsReady = String(wired);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
