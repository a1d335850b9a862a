// The order page's live status: server-sent events, else polling the order's JSON; without script the
// page refreshes itself (<noscript> meta refresh).
(function () {
  "use strict";
  var status = document.getElementById("status");
  if (!status || !status.hasAttribute("data-watch")) return;
  var id = status.getAttribute("data-order");
  var done = false;

  function show(e) {
    if (done) return;
    status.textContent = e.text;
    status.className = "status status-" + e.status;
    // The payment platform asks the customer to confirm (3-D Secure...): take the phone there now.
    // Once per order and tab: back from the platform's page with the order still waiting, the link stays.
    if (e.action && !e.settled && /^(https?:\/\/|\/(?!\/))/.test(e.action)) {
      var link = document.getElementById("action-link");
      if (link) { link.href = e.action; link.parentNode.hidden = false; }
      var seen = "vend-action-" + id;
      var first = true;
      try { first = !sessionStorage.getItem(seen); sessionStorage.setItem(seen, "1"); } catch (err) { first = false; }
      if (first) { done = true; location.assign(e.action); return; }
    }
    if (e.settled) {
      done = true;
      var after = document.getElementById("after");
      var balance = document.getElementById("balance");
      if (balance && e.balance) balance.textContent = e.balance;
      if (after) after.hidden = false;
    }
  }

  function poll() {
    if (done) return;
    fetch("/api/v1/orders/" + encodeURIComponent(id), {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (e) {
        if (e && e.settled) { location.reload(); return; }
        if (e) show(e);
        setTimeout(poll, 1500);
      }, function () { setTimeout(poll, 3000); });
  }

  if (!window.EventSource) { poll(); return; }
  var source = new EventSource("/orders/" + encodeURIComponent(id) + "/events");
  var failures = 0;
  source.addEventListener("status", function (m) {
    failures = 0;
    var e = JSON.parse(m.data);
    show(e);
    if (e.settled) source.close();
  });
  source.onerror = function () {
    // The stream ends after a while by design and the browser reconnects; give up only if it keeps failing.
    if (done) { source.close(); return; }
    failures += 1;
    if (failures >= 3 || source.readyState === EventSource.CLOSED) { source.close(); poll(); }
  };
})();
