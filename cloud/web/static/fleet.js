// The machine page: reload the screen mirror every few seconds. Without script the page has a link.
(function () {
  document.documentElement.classList.add("js");
  var img = document.getElementById("screen");
  if (!img) return;
  var every = (parseFloat(img.dataset.refresh) || 3) * 1000;
  var base = img.getAttribute("src");
  setInterval(function () {
    if (document.hidden) return;
    var next = new Image();
    next.onload = function () { img.src = next.src; };
    next.src = base + "?t=" + Date.now();
  }, every);
})();
