// WeChat Pay's JSAPI page: hand the signed parameters to WeChat's own bridge (WeixinJSBridge, which WeChat's
// in-app browser provides), then go back through /done, where the cloud asks WeChat Pay what happened.
(function () {
  "use strict";
  var button = document.getElementById("wechat-pay");
  if (!button) return;
  var params = JSON.parse(button.getAttribute("data-params"));
  var done = button.getAttribute("data-done");

  function pay() {
    window.WeixinJSBridge.invoke("getBrandWCPayRequest", params, function (res) {
      var msg = (res && res.err_msg) || "";
      if (msg === "get_brand_wcpay_request:ok") { location.assign(done + "?result=ok"); return; }
      var cancelled = document.getElementById("wechat-cancelled");
      if (cancelled) cancelled.hidden = false;
    });
  }

  function ready() {
    button.disabled = false;
    button.addEventListener("click", pay);
  }

  button.disabled = true;
  if (window.WeixinJSBridge) { ready(); return; }
  document.addEventListener("WeixinJSBridgeReady", ready, false);
  setTimeout(function () {
    if (!window.WeixinJSBridge) document.getElementById("wechat-outside").hidden = false;
  }, 1500);
})();
