/* jupyter-reactbox activity reporter.
 *
 * A preview is stopped after `idle_timeout` seconds nobody used it.  Module
 * requests, HMR and an app's own polling are not use; a person's input is.
 * This reports input (at most every __REACTBOX_EVERY__ ms, a third of the
 * idle timeout and never more than a minute apart) to the preview's heartbeat
 * path, and reloads the page if the preview was stopped meanwhile, which
 * starts it again.  It sends nothing else.
 */
(() => {
  "use strict";
  const url = __REACTBOX_BASE__ + "__reactbox/heartbeat";
  let last = 0;
  const beat = () => {
    const now = Date.now();
    if (now - last < __REACTBOX_EVERY__) return;
    last = now;
    fetch(url, { method: "POST", credentials: "omit", cache: "no-store" })
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
})();
