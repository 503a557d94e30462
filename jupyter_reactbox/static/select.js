/* jupyter-reactbox select mode: point at an element of the preview to edit it.
 *
 * The page that frames the preview (the Lab panel) turns the mode on with
 * postMessage({reactbox: "select", on: true}).  Then the element under the
 * pointer is outlined, and a click (which the app does not see) is answered to
 * that page, again by postMessage:
 *   {reactbox: "selected", at: "src/App.jsx:42:9", tag, text, classes}
 * An Alt-click does the same at any time (in the notebook's widget, whose
 * buttons cannot reach the frame, that is the way to pick).
 * The location comes from the element's data-reactbox-src, which the dev server
 * adds in development (see support/vite-plugin.mjs); an app whose elements carry
 * none answers {reactbox: "unavailable"}.  Escape ends the mode
 * ({reactbox: "select", on: false} is sent back).  {reactbox: "clear"} removes
 * the outline of the selected element.
 *
 * Nothing here reaches Jupyter: the sandbox stays closed, and the framing page
 * only takes these messages from its own preview frame.  What they carry is a
 * place in the app's source and a few words of its text.
 */
(() => {
  "use strict";
  if (window.parent === window) return;
  const ATTR = "data-reactbox-src";
  let on = false;
  let hovered = null;
  let selected = null;
  const boxes = {};

  const box = (name, colour, fill) => {
    if (!boxes[name] || !boxes[name].isConnected) {
      const el = boxes[name] || document.createElement("div");
      el.setAttribute("data-reactbox-outline", name);
      el.style.cssText =
        "position:fixed;pointer-events:none;z-index:2147483647;box-sizing:border-box;" +
        `border:2px solid ${colour};background:${fill};border-radius:2px;display:none`;
      (document.body || document.documentElement).appendChild(el);
      boxes[name] = el;
    }
    return boxes[name];
  };
  const place = (name, target) => {
    const el = name === "hover" ? box(name, "#1a73e8", "rgba(26,115,232,.12)") : box(name, "#e8710a", "transparent");
    if (!target || !target.isConnected) {
      el.style.display = "none";
      return;
    }
    const r = target.getBoundingClientRect();
    Object.assign(el.style, {
      display: "block",
      left: `${r.left}px`,
      top: `${r.top}px`,
      width: `${r.width}px`,
      height: `${r.height}px`,
    });
  };
  // The outlines follow their elements (scrolling, layout, hot reloads) while shown.
  let frame = 0;
  const follow = () => {
    place("hover", on ? hovered : null);
    place("selected", selected);
    cancelAnimationFrame(frame);
    if (on || selected) frame = requestAnimationFrame(follow);
  };

  const tell = (message) => window.parent.postMessage(message, "*");
  const located = (node) => (node instanceof Element ? node.closest(`[${ATTR}]`) : null);
  const describe = (el) => ({
    reactbox: "selected",
    at: el.getAttribute(ATTR),
    tag: el.localName,
    text: (el.innerText || el.textContent || "").replace(/\s+/g, " ").trim().slice(0, 120),
    classes: (el.getAttribute("class") || "").trim().slice(0, 200),
  });

  const setMode = (value) => {
    on = value;
    document.documentElement.style.cursor = on ? "crosshair" : "";
    if (!on) hovered = null;
    follow();
  };
  const picking = (e) => e.isTrusted && (on || e.altKey);
  const swallow = (e) => {
    if (!picking(e)) return;
    e.preventDefault();
    e.stopImmediatePropagation();
  };
  // Captured on the window before any of the app's handlers: in select mode (or
  // with Alt) a click selects, and the app sees neither it nor the presses around it.
  for (const type of ["pointerdown", "mousedown", "pointerup", "mouseup", "dblclick", "submit"]) {
    addEventListener(type, swallow, true);
  }
  addEventListener(
    "mousemove",
    (e) => {
      if (!on) return;
      hovered = located(e.target);
      follow();
    },
    true,
  );
  addEventListener(
    "click",
    (e) => {
      if (!picking(e)) return;
      swallow(e);
      const el = located(e.target);
      if (!el) return;
      // Picked in select mode, the outline stays until the framing page clears it;
      // an Alt-click's only flashes (a widget cannot tell the page it was dropped).
      const flash = !on;
      selected = el;
      setMode(false);
      tell(describe(el));
      if (flash) {
        setTimeout(() => {
          if (selected === el) {
            selected = null;
            follow();
          }
        }, 1200);
      }
    },
    true,
  );
  addEventListener(
    "keydown",
    (e) => {
      if (on && e.key === "Escape") {
        swallow(e);
        setMode(false);
        tell({ reactbox: "select", on: false });
      }
    },
    true,
  );
  addEventListener("message", (e) => {
    if (e.source !== window.parent || !e.data || typeof e.data !== "object") return;
    if (e.data.reactbox === "select") {
      if (e.data.on && !document.querySelector(`[${ATTR}]`)) {
        tell({ reactbox: "unavailable" });
        return;
      }
      setMode(Boolean(e.data.on));
    } else if (e.data.reactbox === "clear") {
      selected = null;
      follow();
    }
  });
})();
