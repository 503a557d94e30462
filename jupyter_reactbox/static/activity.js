/* jupyter-reactbox activity and error reporter.
 *
 * Activity: a preview is stopped after `idle_timeout` seconds nobody used it.
 * Module requests, HMR and an app's own polling are not use; a person's input
 * is.  This reports input (at most every __REACTBOX_EVERY__ ms, a third of the
 * idle timeout and never more than a minute apart) to the preview's heartbeat
 * path, and reloads the page if the preview was stopped meanwhile, which
 * starts it again.  The app's own scripts share this page, so they must not be
 * able to report use: only trusted (person-made) events count, the report
 * carries this page load's key, which lives only in this closure (this script
 * element removes itself before any of the app's runs, and the page is served
 * with no-store), and it goes through the fetch this script captured first.
 *
 * Errors: a blank page should say why in the notebook.  Uncaught errors,
 * unhandled rejections, scripts and styles that failed to load, and Vite's
 * error overlay are POSTed to the preview's error path.  A page lives through
 * many hot updates, and an error fixed by one may come back with the next: an
 * error is a repeat only if it is thrown at the same place (a hot update gives
 * a module a new URL, so a new version's error is news), and a repeat is
 * reported again once a second has passed since its last report; at most 20
 * reports go in any 10 seconds.  Nothing else is sent.
 *
 * Recovery: a browser on the same host as the container engine drops the
 * requests it has in flight when a host network interface changes (any
 * container start), and a page whose own script or module failed to load so
 * stays blank.  A page that loses one of its own scripts in its first seconds
 * loads itself again, at most twice in a row (counted in window.name, which a
 * reload keeps).
 */
(() => {
  "use strict";
  const base = __REACTBOX_BASE__;
  // Requests say "same-origin": a sandboxed page's origin is opaque, so they carry
  // no cookie of Jupyter's; a preview on its own origin sends its token cookie.
  const key = __REACTBOX_KEY__;
  const send = window.fetch.bind(window);
  if (document.currentScript) document.currentScript.remove();
  let last = 0;
  const beat = (e) => {
    if (!key || (e && !e.isTrusted)) return;
    const now = Date.now();
    if (now - last < __REACTBOX_EVERY__) return;
    last = now;
    send(base + "__reactbox/heartbeat/" + key, { method: "POST", credentials: "same-origin", cache: "no-store" })
      .then((r) => r.json())
      .then((s) => {
        if (s.status !== "running") location.reload();
      })
      .catch(() => {});
  };
  for (const type of ["pointerdown", "keydown", "wheel", "touchstart"]) {
    addEventListener(type, beat, { capture: true, passive: true });
  }
  beat();

  const reported = new Map(); // kind + message -> when it was last reported
  let windowStart = 0;
  let inWindow = 0;
  const report = (kind, message, source, stack) => {
    const key = kind + "\n" + message + "\n" + (source || "");
    const now = Date.now();
    if (!message || now - (reported.get(key) || 0) < 1000) return;
    if (now - windowStart >= 10000) {
      windowStart = now;
      inWindow = 0;
    }
    if (inWindow >= 20) return;
    inWindow += 1;
    if (reported.size >= 200) reported.clear();
    reported.set(key, now);
    const body = JSON.stringify({
      kind,
      message: String(message).slice(0, 2000),
      source: String(source || "").slice(0, 500),
      stack: String(stack || "").slice(0, 4000),
    });
    send(base + "__reactbox/error", { method: "POST", body, credentials: "same-origin", keepalive: true })
      .catch(() => {});
  };
  const RELOADS = "reactbox-reloads:";
  const tries = window.name.startsWith(RELOADS) ? Number(window.name.slice(RELOADS.length)) : 0;
  const young = () => performance.now() < 15000;
  const again = () => {
    if (tries >= 2 || !young() || (window.name && !window.name.startsWith(RELOADS))) return false;
    window.name = RELOADS + (tries + 1);
    setTimeout(() => location.reload(), 200 * (tries + 1));
    return true;
  };
  setTimeout(() => {
    if (window.name.startsWith(RELOADS)) window.name = ""; // it loaded: start counting anew
  }, 15000);
  const own = (url) => {
    try {
      return new URL(url, location.href).host === location.host;
    } catch {
      return false;
    }
  };
  addEventListener(
    "error",
    (e) => {
      const el = e.target;
      if (el && el !== window && (el.src || el.href)) {
        if (el.localName === "script" && own(el.src) && again()) return;
        report("resource", "Failed to load " + (el.src || el.href), el.src || el.href);
      } else {
        const where = e.filename ? `${e.filename}:${e.lineno}:${e.colno}` : "";
        report("error", e.message || String(e.error), where, e.error && e.error.stack);
      }
    },
    true,
  );
  addEventListener("unhandledrejection", (e) => {
    const r = e.reason;
    const message = (r && r.message) || String(r);
    if (/dynamically imported module|Importing a module script failed/.test(message) && again()) {
      return;
    }
    report("rejection", message, "", r && r.stack);
  });
  // Vite shows compile errors in an overlay element (open shadow root).
  new MutationObserver((records) => {
    for (const rec of records) {
      for (const node of rec.addedNodes) {
        if (node.nodeName !== "VITE-ERROR-OVERLAY") continue;
        const root = node.shadowRoot;
        const text = (sel) => (root && root.querySelector(sel)?.textContent) || "";
        report("overlay", text(".message") || "Compile error", text(".file"), text(".frame"));
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
