// streamsync console: draws the size plots. Loaded from a file (the CSP allows no inline
// script); the numbers come from the page's own sizes.json endpoint, never from markup.
(function () {
  "use strict";
  window.streamsyncPlots = window.streamsyncPlots || {};

  function draw(el) {
    var url = el.getAttribute("data-sizes-url");
    var small = el.hasAttribute("data-small");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        var times = data.times_ms.map(function (t) { return t / 1000; });
        window.streamsyncPlots[data.audience + "/" + data.resolution] = data;
        var width = small ? 220 : Math.max(320, el.clientWidth || 900);
        var opts = {
          width: width,
          height: small ? 60 : 300,
          legend: { show: !small },
          cursor: { show: !small },
          scales: { x: { time: true } },
          axes: small ? [{ show: false }, { show: false }] : [{}, { label: "members" }],
          series: [{}, { label: "members", stroke: "#1f5fbf", width: small ? 1 : 2, fill: "rgba(31,95,191,0.08)" }],
        };
        var columns = [times, data.sizes];
        var banded = !small && data.swing_low && data.swing_low.some(function (v) { return v !== null; });
        if (banded) {
          // The swing alert's band: the size 24 hours earlier, minus and plus its percent.
          var dash = { stroke: "#c0392b", width: 1, dash: [6, 4], spanGaps: false };
          opts.series.push(Object.assign({ label: "swing alert below" }, dash));
          opts.series.push(Object.assign({ label: "swing alert above" }, dash));
          columns.push(data.swing_low, data.swing_high);
        }
        el.setAttribute("data-swing-band", banded ? "true" : "false");
        if (times.length > 0) {
          new uPlot(opts, columns, el);
        } else {
          el.textContent = "no changes yet";
        }
        el.setAttribute("data-points", String(times.length));
        el.setAttribute("data-loaded", "true");
      })
      .catch(function (err) {
        el.textContent = "could not load the sizes: " + err.message;
        el.setAttribute("data-loaded", "error");
      });
  }

  function drawAll(root) {
    var plots = root.querySelectorAll("[data-sizes-url]:not([data-loaded])");
    for (var i = 0; i < plots.length; i++) { draw(plots[i]); }
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (e) { drawAll(e.target); });
})();
