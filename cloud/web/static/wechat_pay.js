// WeChat Pay's page: hand the signed parameters to WeChat's own bridge (WeixinJSBridge, which WeChat's in-app
// browser provides): a JSAPI payment (getBrandWCPayRequest) or a Pay Score service order to confirm
// (openBusinessView, wxpayScoreUse). Then back through /done, where the cloud asks WeChat Pay what happened.
(function () {
  "use strict";
  var button = document.getElementById("wechat-pay");
  if (!button) return;
  var params = JSON.parse(button.getAttribute("data-params"));
  var done = button.getAttribute("data-done");
  var payscore = button.getAttribute("data-kind") === "payscore";

  function back(res, ok) {
    var msg = (res && res.err_msg) || "";
    if (msg === ok) { location.assign(done + "?result=ok"); return; }
    var cancelled = document.getElementById("wechat-cancelled");
    if (cancelled) cancelled.hidden = false;
  }

  function pay() {
    if (payscore) {
      var query = Object.keys(params).map(function (k) {
        return encodeURIComponent(k) + "=" + encodeURIComponent(params[k]);
      }).join("&");
      window.WeixinJSBridge.invoke("openBusinessView", {businessType: "wxpayScoreUse", queryString: query},
        function (res) { back(res, "openBusinessView:ok"); });
      return;
    }
    window.WeixinJSBridge.invoke("getBrandWCPayRequest", params,
      function (res) { back(res, "get_brand_wcpay_request:ok"); });
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
