/* The embedding view (templates/embedding.html): draws a run's 2-D projection on its canvas, the selection in
   red; a click (or the arrow keys, through the selection) shows the nearest sample's image and name. Names are
   set as text, never as HTML. Loaded as a file (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";
  var PAD = 10;

  function init(root) {
    var found = root.querySelectorAll ? root.querySelectorAll("canvas.embedding") : [];
    for (var i = 0; i < found.length; i++) setup(found[i]);
  }

  function setup(canvas) {
    if (canvas.dataset.state) return;
    canvas.dataset.state = "loading";
    fetch(canvas.dataset.src, { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) { draw(canvas, d); })
      .catch(function (e) { canvas.dataset.state = "failed"; status(canvas, "The projection could not be loaded: " + e.message); });
  }

  function status(canvas, text) {
    var el = document.getElementById("embedding-count");
    if (el) el.textContent = text;
  }

  function draw(canvas, d) {
    var ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height, i;
    var px = function (k) { return PAD + d.x[k] * (w - 2 * PAD); };
    var py = function (k) { return PAD + (1 - d.y[k]) * (h - 2 * PAD); };
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = "rgba(80, 90, 105, 0.5)";
    for (i = 0; i < d.x.length; i++) if (!d.selected[i]) ctx.fillRect(px(i) - 1, py(i) - 1, 2, 2);
    ctx.fillStyle = "#c4141f";
    var picked = [];
    for (i = 0; i < d.x.length; i++) if (d.selected[i]) { ctx.fillRect(px(i) - 2, py(i) - 2, 4, 4); picked.push(i); }
    canvas.dataset.state = "drawn";
    canvas.dataset.points = String(d.x.length);
    status(canvas, d.x.length + " points" + (d.n > d.x.length ? " of " + d.n : "") + ", " + picked.length + " selected");
    var at = -1;
    canvas.addEventListener("click", function (ev) {
      var r = canvas.getBoundingClientRect();
      var cx = (ev.clientX - r.left) * w / r.width, cy = (ev.clientY - r.top) * h / r.height;
      var best = -1, bestD = Infinity;
      for (var k = 0; k < d.x.length; k++) {
        var dx = px(k) - cx, dy = py(k) - cy, dd = dx * dx + dy * dy;
        if (dd < bestD) { bestD = dd; best = k; }
      }
      if (best >= 0) show(canvas, d, best);
    });
    canvas.addEventListener("keydown", function (ev) {
      if (!picked.length || (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft")) return;
      ev.preventDefault();
      at = (at + (ev.key === "ArrowRight" ? 1 : picked.length - 1)) % picked.length;
      show(canvas, d, picked[at]);
    });
  }

  function show(canvas, d, k) {
    var fig = document.getElementById(canvas.dataset.figure);
    if (!fig) return;
    var img = fig.querySelector("img"), cap = fig.querySelector("figcaption");
    cap.textContent = d.names[k] + (d.selected[k] ? " (selected)" : "");
    img.alt = d.names[k];
    if (d.ids[k]) img.src = d.imageBase + d.ids[k] + "/image"; else img.removeAttribute("src");
    fig.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (ev) { init(ev.detail.elt); });
})();
