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

  const XLINK = "http://www.w3.org/1999/xlink";
  const sprites = new Map(); // sprite URL -> Promise<Document>
  let defs = null;
  let counter = 0;
  const inlined = new Map(); // "url#id" -> local id

  const localId = async (url, id) => {
    const key = `${url}#${id}`;
    if (inlined.has(key)) return inlined.get(key);
    if (!sprites.has(url)) {
      sprites.set(
        url,
        fetch(url)
          .then((r) => (r.ok ? r.text() : ""))
          .then((text) => new DOMParser().parseFromString(text, "image/svg+xml")),
      );
    }
    const doc = await sprites.get(url);
    const symbol = doc.getElementById(id);
    if (!symbol) return null;
    if (!defs) {
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("aria-hidden", "true");
      svg.style.cssText = "position:absolute;width:0;height:0;overflow:hidden";
      defs = document.createElementNS("http://www.w3.org/2000/svg", "defs");
      svg.appendChild(defs);
      document.body.appendChild(svg);
    }
    if (!inlined.has(key)) {
      const copy = document.importNode(symbol, true);
      copy.id = `reactbox-sprite-${++counter}-${id}`;
      defs.appendChild(copy);
      inlined.set(key, copy.id);
    }
    return inlined.get(key);
  };

  const fix = async (use) => {
    const href = use.getAttribute("href") ?? use.getAttributeNS(XLINK, "href");
    if (!href || href.startsWith("#")) return;
    const url = new URL(href, document.baseURI);
    if (url.host !== location.host || !url.hash) return;
    const id = await localId(url.href.split("#")[0], decodeURIComponent(url.hash.slice(1)));
    if (id) use.setAttribute("href", `#${id}`);
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
