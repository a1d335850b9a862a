// The fleet page's street map: tiles from the configured tile server (the figure's data-tiles, a
// {z}/{x}/{y} template) under the locations' markers, drawn here without any library. The plain plan
// stays on the page until every tile has loaded; if any tile fails (no network, a server down) the street
// map is dropped and the plan stays. The figure's data-shown says which one is shown: "plan" or "streets".
(function () {
  "use strict";
  var TILE = 256, MARGIN = 40, MAX_ZOOM = 17, ONE_PLACE_ZOOM = 15;

  function worldX(lon, z) { return (lon + 180) / 360 * TILE * Math.pow(2, z); }
  function worldY(lat, z) {
    var s = Math.sin(lat * Math.PI / 180);
    return (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * TILE * Math.pow(2, z);
  }

  function zoomFor(points, w, h) {
    if (points.length < 2) return ONE_PLACE_ZOOM;
    for (var z = MAX_ZOOM; z > 0; z--) {
      var xs = points.map(function (p) { return worldX(p.lon, z); });
      var ys = points.map(function (p) { return worldY(p.lat, z); });
      if (Math.max.apply(null, xs) - Math.min.apply(null, xs) <= w - 2 * MARGIN &&
          Math.max.apply(null, ys) - Math.min.apply(null, ys) <= h - 2 * MARGIN) return z;
    }
    return 0;
  }

  function draw(figure) {
    var plan = figure.querySelector(".plan");
    var points = Array.prototype.map.call(figure.querySelectorAll(".plan a[data-lat]"), function (a) {
      return {lat: parseFloat(a.dataset.lat), lon: parseFloat(a.dataset.lon), href: a.getAttribute("href"),
              name: a.dataset.name, title: (a.querySelector("title") || {}).textContent || a.dataset.name,
              fault: a.dataset.fault === "1"};
    }).filter(function (p) { return isFinite(p.lat) && isFinite(p.lon) && Math.abs(p.lat) < 85; });
    if (!points.length) return;
    var w = Math.max(200, Math.min(plan.clientWidth || figure.clientWidth, 960));
    var h = Math.round(Math.min(360, Math.max(220, w * 0.6)));
    var z = zoomFor(points, w, h), n = Math.pow(2, z);
    var xs = points.map(function (p) { return worldX(p.lon, z); });
    var ys = points.map(function (p) { return worldY(p.lat, z); });
    var left = (Math.min.apply(null, xs) + Math.max.apply(null, xs)) / 2 - w / 2;
    var top = (Math.min.apply(null, ys) + Math.max.apply(null, ys)) / 2 - h / 2;

    var streets = document.createElement("div");
    streets.className = "streets";
    streets.hidden = true;
    streets.style.height = h + "px";
    streets.setAttribute("role", "group");
    streets.setAttribute("aria-label", figure.dataset.label || "");
    var layer = document.createElement("div");
    layer.className = "tiles";
    streets.appendChild(layer);

    var waiting = 0, failed = false;
    function fail() {
      if (failed) return;
      failed = true;
      if (streets.parentNode) streets.parentNode.removeChild(streets);
      plan.hidden = false;
      figure.dataset.shown = "plan";
    }
    function loaded() {
      waiting -= 1;
      if (waiting === 0 && !failed) {
        streets.hidden = false;
        plan.hidden = true;
        figure.dataset.shown = "streets";
      }
    }
    var template = figure.dataset.tiles;
    for (var ty = Math.floor(top / TILE); ty <= Math.floor((top + h) / TILE); ty++) {
      if (ty < 0 || ty >= n) continue;
      for (var tx = Math.floor(left / TILE); tx <= Math.floor((left + w) / TILE); tx++) {
        var img = new Image(TILE, TILE);
        img.alt = "";
        img.className = "tile";
        img.style.left = Math.round(tx * TILE - left) + "px";
        img.style.top = Math.round(ty * TILE - top) + "px";
        img.addEventListener("load", loaded);
        img.addEventListener("error", fail);
        waiting += 1;
        img.src = template.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty);
        layer.appendChild(img);
      }
    }
    points.forEach(function (p, i) {
      var pin = document.createElement("a");
      pin.className = "pin" + (p.fault ? " fault" : "");
      pin.href = p.href;
      pin.title = p.title;
      pin.style.left = Math.round(xs[i] - left) + "px";
      pin.style.top = Math.round(ys[i] - top) + "px";
      var dot = document.createElement("span");
      dot.className = "pin-dot";
      var label = document.createElement("span");
      label.className = "pin-label";
      label.textContent = p.name;
      pin.appendChild(dot);
      pin.appendChild(label);
      streets.appendChild(pin);
    });
    var credit = document.createElement("p");
    credit.className = "attribution";
    credit.textContent = figure.dataset.attribution || "";
    streets.appendChild(credit);
    figure.insertBefore(streets, plan);
    if (waiting === 0) fail();
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("figure.map[data-tiles]"), draw);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
