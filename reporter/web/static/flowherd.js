/* flowherd web view: live refresh by polling the server's HTML fragments.
 *
 * Every element with data-fragment="URL" is reloaded from URL. On a capture's page the status
 * fragment (data-role="status") is polled every data-refresh seconds; when its signature (run,
 * packets, batches, state) changes, the "fast" parts (the top-N table) reload at once and the
 * "slow" ones (summary, windows, figures: whole-table reads) at most every SLOW_MS, and once
 * more when the capture turns final. Pages without a status part reload their fast parts on
 * every poll. No framework, nothing fetched from elsewhere.
 */
(function () {
  "use strict";
  var SLOW_MS = 8000;
  var FINAL_FACTOR = 5;
  var interval = Math.max(200, Number(document.body.dataset.refresh || "2") * 1000);
  var live = document.getElementById("live");
  var shown = new WeakMap();  // the HTML each part was last given

  function parts(kind) {
    return Array.prototype.slice.call(
      document.querySelectorAll('[data-fragment][data-every="' + kind + '"]'));
  }

  function load(el) {
    return fetch(el.dataset.fragment, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html !== shown.get(el)) {  // unchanged: leave the DOM alone
          el.innerHTML = html;
          shown.set(el, html);
        }
        return html !== null;
      })
      .catch(function () { return false; });
  }

  function reloadImages(tag) {
    document.querySelectorAll("img[data-live]").forEach(function (img) {
      var url = new URL(img.getAttribute("src"), window.location.href);
      url.searchParams.set("v", tag);
      img.setAttribute("src", url.pathname + url.search);
    });
  }

  function statusInfo(el) {
    var s = el && el.querySelector("[data-signature]");
    return s ? { sig: s.dataset.signature, final: s.dataset.final === "1" } : null;
  }

  function stamp(final) {
    if (!live) { return; }
    live.hidden = false;
    live.textContent = (final ? "final" : "live") + ", updated " + new Date().toLocaleTimeString();
  }

  var statusEl = document.querySelector('[data-fragment][data-role="status"]');
  var seen = statusInfo(statusEl);
  var slowDirty = false;
  var lastSlow = Date.now();

  function reloadSlow(tag) {
    slowDirty = false;
    lastSlow = Date.now();
    reloadImages(tag);
    return Promise.all(parts("slow").map(load));
  }

  function tick() {
    var work;
    if (!statusEl) {
      work = Promise.all(parts("fast").map(load)).then(function () { stamp(false); return false; });
    } else {
      work = load(statusEl).then(function (ok) {
        var now = statusInfo(statusEl);
        if (!ok || !now) { return seen ? seen.final : false; }
        var chain = Promise.resolve();
        if (!seen || now.sig !== seen.sig) {
          chain = Promise.all(parts("fast").map(load));
          slowDirty = true;
        }
        var turnedFinal = now.final && !(seen && seen.final);
        seen = now;
        if (slowDirty && (turnedFinal || now.final || Date.now() - lastSlow >= SLOW_MS)) {
          chain = chain.then(function () { return reloadSlow(now.sig); });
        }
        return chain.then(function () { stamp(now.final); return now.final; });
      });
    }
    work.then(function (final) {
      window.setTimeout(tick, final ? interval * FINAL_FACTOR : interval);
    });
  }

  window.setTimeout(tick, interval);
})();
