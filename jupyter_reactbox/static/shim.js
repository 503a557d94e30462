/* jupyter-reactbox preview shim.
 *
 * The preview runs in an opaque origin (CSP `sandbox` without
 * allow-same-origin) so that its code cannot act as the Jupyter user.  Some
 * things that apps expect break there; this restores them without giving the
 * page any of Jupyter's authority:
 *   - localStorage / sessionStorage throw SecurityError -> in-memory stores;
 *   - document.cookie throws SecurityError -> an in-memory cookie jar; what is
 *     in localStorage and the jar is kept by the server for this project (a
 *     POST to the preview's own path, at most 256 KiB) and handed to the next
 *     page load, so a theme or a login made in the app survives a reload;
 *   - <use href="/sprite.svg#id"> needs a same-origin document -> the sprite
 *     is fetched (CORS) and the symbol inlined into this document;
 *   - navigator.serviceWorker throws SecurityError, and an app that registers a
 *     worker at load (Mock Service Worker, a PWA) would be a blank page -> a
 *     container whose register() fails with a message that says why, which the
 *     page also shows, as a bar at its top;
 *   - the page is served under the preview's base, and a request the app makes
 *     to a path of this host outside it (fetch('/feedback') for its companion
 *     API, a dev server's own endpoint) would go to Jupyter's root, where nothing
 *     of the app is -> a path from the root goes under the base (fetch,
 *     XMLHttpRequest, EventSource).
 */
(() => {
  "use strict";
  const base = __REACTBOX_BASE__;
  const stored = __REACTBOX_STORED__;
  const send = window.fetch.bind(window);
  const kept = { local: new Map(), cookies: new Map() };
  let saving = null;
  const save = () => {
    clearTimeout(saving);
    saving = setTimeout(() => {
      const body = JSON.stringify({
        local: Object.fromEntries(kept.local),
        cookies: Object.fromEntries(kept.cookies),
      });
      send(base + "__reactbox/storage", { method: "POST", body, keepalive: body.length < 60000 })
        .catch(() => {});
    }, 250);
  };
  const memoryStorage = (items, changed) => ({
    getItem: (k) => (items.has(String(k)) ? items.get(String(k)) : null),
    setItem: (k, v) => void (items.set(String(k), String(v)), changed()),
    removeItem: (k) => void (items.delete(String(k)), changed()),
    clear: () => void (items.clear(), changed()),
    key: (i) => Array.from(items.keys())[i] ?? null,
    get length() {
      return items.size;
    },
  });
  for (const [name, items, changed] of [
    ["localStorage", kept.local, save],
    ["sessionStorage", new Map(), () => {}],
  ]) {
    try {
      void window[name].length;
    } catch {
      if (name === "localStorage") {
        for (const [k, v] of Object.entries(stored.local || {})) items.set(k, String(v));
      }
      Object.defineProperty(window, name, { value: memoryStorage(items, changed), configurable: true });
    }
  }

  try {
    void document.cookie;
  } catch {
    const jar = kept.cookies;
    for (const [k, v] of Object.entries(stored.cookies || {})) jar.set(k, String(v));
    Object.defineProperty(Document.prototype, "cookie", {
      configurable: true,
      get: () => Array.from(jar, ([k, v]) => (k ? `${k}=${v}` : v)).join("; "),
      set: (text) => {
        const [pair, ...attrs] = String(text).split(";");
        const eq = pair.indexOf("=");
        const key = eq < 0 ? "" : pair.slice(0, eq).trim();
        const value = eq < 0 ? pair.trim() : pair.slice(eq + 1).trim();
        const expired = attrs.some((a) => {
          const [n, v = ""] = a.split("=").map((s) => s.trim().toLowerCase());
          return (n === "max-age" && Number(v) <= 0) || (n === "expires" && Date.parse(v) < Date.now());
        });
        if (expired) jar.delete(key);
        else jar.set(key, value);
        save();
      },
    });
  }

  // A path from this host's root ("/api/feedback"), as apps write their own API's,
  // goes under the base.  A full URL is taken as it is meant.
  const underBase = (input) => {
    if (typeof input !== "string" || !input.startsWith("/") || input.startsWith("//")) return input;
    return input.startsWith(base) ? input : base.replace(/\/$/, "") + input;
  };
  window.fetch = ((original) =>
    function fetch(input, init) {
      return original.call(this, underBase(input), init);
    })(window.fetch);
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    return open.call(this, method, underBase(url), ...rest);
  };
  if (typeof window.EventSource === "function") {
    const Original = window.EventSource;
    const Under = function EventSource(url, init) {
      return new Original(underBase(url), init);
    };
    Under.prototype = Original.prototype;
    for (const key of ["CONNECTING", "OPEN", "CLOSED"]) Under[key] = Original[key];
    window.EventSource = Under;
  }

  // A service worker needs an origin of its own: say so, in the page and to the
  // notebook (the rejection is reported like any), instead of a blank page.
  let workerless = false;
  try {
    void navigator.serviceWorker;
  } catch {
    workerless = true;
  }
  if (workerless) {
    const why =
      "This app registers a service worker, which a preview in Jupyter's sandbox cannot " +
      "have. Run it at an origin of its own (c.ReactBoxApp.preview_origin_template; " +
      "see the docs), or start its worker only when navigator.serviceWorker works.";
    const say = () => {
      if (document.getElementById("reactbox-no-worker")) return;
      const bar = document.createElement("div");
      bar.id = "reactbox-no-worker";
      bar.setAttribute("role", "alert");
      bar.textContent = why;
      bar.style.cssText =
        "position:fixed;top:0;left:0;right:0;z-index:2147483647;padding:8px 12px;" +
        "background:#fff3cd;color:#664d03;font:13px system-ui,sans-serif;" +
        "border-bottom:1px solid #ffe69c";
      (document.body || document.documentElement).appendChild(bar);
    };
    const refused = () => {
      if (document.body) say();
      else document.addEventListener("DOMContentLoaded", say, { once: true });
      return Promise.reject(new DOMException(why, "SecurityError"));
    };
    const container = {
      controller: null,
      ready: new Promise(() => {}),
      oncontrollerchange: null,
      onmessage: null,
      onmessageerror: null,
      register: refused,
      getRegistration: () => Promise.resolve(undefined),
      getRegistrations: () => Promise.resolve([]),
      startMessages: () => {},
      addEventListener: () => {},
      removeEventListener: () => {},
      dispatchEvent: () => false,
    };
    Object.defineProperty(Navigator.prototype, "serviceWorker", {
      configurable: true,
      get: () => container,
    });
  }

  // A <use> that names an external sprite is refused by the browser (and logged as
  // "Unsafe attempt to load URL") the moment it is connected, before any observer
  // could change it. So the reference is changed as it is set: the element gets a
  // local id at once, and the symbol is fetched (CORS) and inlined under that id;
  // <use> picks it up when it appears.
  const XLINK = "http://www.w3.org/1999/xlink";
  const sprites = new Map(); // sprite URL -> Promise<Document>
  const inlined = new Map(); // "url#id" -> local id
  let defs = null;
  let counter = 0;

  const whenBody = () =>
    document.body
      ? Promise.resolve()
      : new Promise((done) => document.addEventListener("DOMContentLoaded", done, { once: true }));

  const inline = async (url, id, local) => {
    if (!sprites.has(url)) {
      sprites.set(
        url,
        fetch(url)
          .then((r) => (r.ok ? r.text() : ""))
          .then((text) => new DOMParser().parseFromString(text, "image/svg+xml")),
      );
    }
    const symbol = (await sprites.get(url)).getElementById(id);
    if (!symbol) return;
    await whenBody();
    if (!defs) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("aria-hidden", "true");
      svg.style.cssText = "position:absolute;width:0;height:0;overflow:hidden";
      defs = document.createElementNS("http://www.w3.org/2000/svg", "defs");
      svg.appendChild(defs);
      document.body.appendChild(svg);
    }
    const copy = document.importNode(symbol, true);
    copy.id = local;
    defs.appendChild(copy);
  };

  // "/icons.svg#home" on this host -> "#reactbox-sprite-1-home"; anything else as is.
  const localRef = (value) => {
    if (!value || value.startsWith("#")) return value;
    let url;
    try {
      url = new URL(value, document.baseURI);
    } catch {
      return value;
    }
    if (url.host !== location.host || !url.hash) return value;
    const file = url.href.split("#")[0];
    const id = decodeURIComponent(url.hash.slice(1));
    const key = `${file}#${id}`;
    if (!inlined.has(key)) {
      const local = `reactbox-sprite-${++counter}-${id}`;
      inlined.set(key, local);
      inline(file, id, local);
    }
    return `#${inlined.get(key)}`;
  };

  const isHref = (name) => name === "href" || name === "xlink:href";
  const { setAttribute, setAttributeNS } = Element.prototype;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof SVGUseElement && isHref(String(name).toLowerCase())) {
      value = localRef(String(value));
    }
    return setAttribute.call(this, name, value);
  };
  Element.prototype.setAttributeNS = function (ns, name, value) {
    if (this instanceof SVGUseElement && isHref(String(name).toLowerCase())) {
      value = localRef(String(value));
    }
    return setAttributeNS.call(this, ns, name, value);
  };

  // What the parser made (static HTML), or set another way: changed when seen.
  const fix = (use) => {
    for (const [ns, name] of [[null, "href"], [XLINK, "xlink:href"]]) {
      const value = ns ? use.getAttributeNS(ns, "href") : use.getAttribute(name);
      const local = localRef(value);
      if (value && local !== value) {
        if (ns) setAttributeNS.call(use, ns, name, local);
        else setAttribute.call(use, name, local);
      }
    }
  };

  const scan = (root) => {
    if (root.localName === "use") fix(root);
    root.querySelectorAll?.("use").forEach(fix);
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "attributes") scan(r.target);
      else r.addedNodes.forEach((n) => n.nodeType === 1 && scan(n));
    }
  }).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["href", "xlink:href"],
  });
})();
