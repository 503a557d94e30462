/* jupyter-reactbox preview shim.
 *
 * The preview runs in an opaque origin (CSP `sandbox` without
 * allow-same-origin) so that its code cannot act as the Jupyter user.  Three
 * things that apps expect break there; this restores them without giving the
 * page any of Jupyter's authority:
 *   - localStorage / sessionStorage throw SecurityError -> in-memory stores;
 *   - document.cookie throws SecurityError -> an in-memory cookie jar;
 *   - <use href="/sprite.svg#id"> needs a same-origin document -> the sprite
 *     is fetched (CORS) and the symbol inlined into this document.
 */
(() => {
  "use strict";
  const memoryStorage = () => {
    const items = new Map();
    return {
      getItem: (k) => (items.has(String(k)) ? items.get(String(k)) : null),
      setItem: (k, v) => void items.set(String(k), String(v)),
      removeItem: (k) => void items.delete(String(k)),
      clear: () => items.clear(),
      key: (i) => Array.from(items.keys())[i] ?? null,
      get length() {
        return items.size;
      },
    };
  };
  for (const name of ["localStorage", "sessionStorage"]) {
    try {
      void window[name].length;
    } catch {
      Object.defineProperty(window, name, { value: memoryStorage(), configurable: true });
    }
  }

  try {
    void document.cookie;
  } catch {
    const jar = new Map();
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
      },
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
