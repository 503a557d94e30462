'use strict'
// Loaded (--require, through NODE_OPTIONS) into every Node process of a Next.js
// dev server that jupyter-reactbox runs in the sandbox.  It makes the preview's
// base (REACTBOX_BASE) Next's default basePath, without a change to the app's
// files: Next merges the app's own next.config over its defaults, then derives
// assetPrefix, the image path and the HMR socket from basePath.  An app that
// sets a basePath of its own keeps it (and is served under it).  For a production
// build (REACTBOX_EXPORT, next-build.cjs), a static export is the default too.
//
// Next's defaults are a frozen object exported by next/dist/server/config-shared;
// every require() of that module gets a copy of its exports whose defaults have
// the base.
const Module = require('module')

// `import ... from 'reactbox'`, the notebook bridge, resolves from node_modules (once:
// the first process of the dev server, the one its command starts, provides it).
if (!process.env.REACTBOX_PROVIDED) {
  process.env.REACTBOX_PROVIDED = '1'
  require('./provide.cjs')(process.cwd())
}

const base = (process.env.REACTBOX_BASE || '').replace(/\/$/, '')
const load = Module._load
const replaced = new WeakMap()

Module._load = function (request, parent, isMain) {
  const exported = load.apply(this, arguments)
  if (!base || typeof request !== 'string' || !/config-shared(\.js)?$/.test(request)) {
    return exported
  }
  const defaults = exported && exported.defaultConfig
  if (!defaults || typeof defaults !== 'object' || !('basePath' in defaults)) return exported
  if (!replaced.has(exported)) {
    const ours = { basePath: base }
    if (process.env.REACTBOX_EXPORT) {
      // A production build (next-build.cjs): a static export in a folder of its own,
      // one index.html per route, with images as they are (no server to resize them).
      Object.assign(ours, {
        output: 'export',
        distDir: '.reactbox-next',
        trailingSlash: true,
        images: { ...defaults.images, unoptimized: true },
      })
    }
    const copy = { ...exported, defaultConfig: Object.freeze({ ...defaults, ...ours }) }
    Object.defineProperty(copy, '__esModule', { value: true })
    replaced.set(exported, copy)
  }
  return replaced.get(exported)
}
