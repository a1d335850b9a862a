// The receipt's Print button: shown only where script can press it (the page's policy allows no inline script).
(function () {
  var button = document.getElementById("print");
  if (!button) return;
  button.hidden = false;
  button.addEventListener("click", function () { window.print(); });
})();
