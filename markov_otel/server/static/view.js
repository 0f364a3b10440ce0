// The view in the URL, so a link shows what its sender saw: each page's script reads its
// settings here at load (sort, filter, columns, smoothing, log scale, x axis, hidden and pinned
// panels…) and writes them back on every change (history.replaceState: no new history entry).
"use strict";
(function () {
  var params = new URLSearchParams(location.search);
  function write() {
    var query = params.toString().replace(/%2C/g, ",");  // ids=A,B stays readable
    history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }
  window.MarkovView = {
    get: function (name) { return params.get(name); },
    list: function (name) {
      return params.getAll(name).filter(function (v) { return v !== ""; });
    },
    // A list becomes the parameter repeated; "", null and [] remove it.
    set: function (name, value) {
      var before = params.getAll(name).join("\u0000");
      params.delete(name);
      if (Array.isArray(value)) value.forEach(function (v) { params.append(name, v); });
      else if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
      if (params.getAll(name).join("\u0000") !== before) write();
    },
  };
})();
