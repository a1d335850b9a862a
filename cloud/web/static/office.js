// The settlement rule form: show only the field the chosen kind takes (percent or amount). Without script
// both show, and the server takes the one the kind needs.
document.querySelectorAll("select[name=kind]").forEach(function (kind) {
  var form = kind.form;
  function show() {
    form.querySelectorAll("[data-kinds]").forEach(function (part) {
      part.hidden = part.dataset.kinds.split(" ").indexOf(kind.value) < 0;
    });
  }
  kind.addEventListener("change", show);
  show();
});
