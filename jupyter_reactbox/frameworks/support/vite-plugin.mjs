// What jupyter-reactbox adds to a Vite app's dev server, without a change to the
// app's files: client routers that see paths relative to the preview, and
// elements that say where in the source they were written.
//
// The page's path carries the preview's base (/user/x/reactbox/preview/<id>/<token>/),
// so a BrowserRouter, createBrowserRouter or TanStack Router with no basename
// matches no route.  The app's own imports of those packages resolve to a small
// module that re-exports the package and gives those three a default basename of
// the base; a basename the app sets itself is kept.  Imports from inside
// node_modules, and server-side ones, get the package untouched.
//
// Source locations, for "select to edit": in development every JSX transform
// (esbuild, Oxc, Babel, SWC) passes each element's file, line and column to
// jsxDEV.  The app's own imports of react/jsx-dev-runtime resolve to a module
// that adds them to host elements (<button>, <div>) as data-reactbox-src
// ="src/App.jsx:42:9", which the preview's select mode reads.  Nothing is
// written to the app's files, and a production build (which this plugin is not
// part of) is unchanged.
//
// The app's own proxy (server.proxy, to its companion API): its keys name paths
// from the root ('/api'), and under the preview's base a request arrives as
// '<base>api/...', which Vite's proxy would not match; such a request loses the
// base before Vite's proxy sees it (and only such a request).
//
// The notebook bridge: `import ... from 'reactbox'` is reactbox-app.js, served from
// here (provide.cjs also puts it in node_modules, for other bundlers and for type
// checkers), unless the app installed a package of that name itself.
//
// A generation, for the preview proxy's response cache: n counts what can change
// a module Vite serves (a file event of its watcher, a message to the pages: an
// update, a full reload after new dependencies).  Every response carries the
// generation it was served at, X-Reactbox-Generation: <run>.<n>, and the proxy
// follows GENERATION_PATH, which says each new one as it happens (a line each,
// and the current one every HEARTBEAT_MS).  The proxy replays a module from
// memory only while it hears that nothing changed since it was served.  This
// is the dev server's word about its own responses, nothing more.
import fs from 'node:fs'
import path from 'node:path'

const PREFIX = '\0reactbox-router:'
const ROUTERS = {
  'react-router-dom': 'react-router',
  'react-router': 'react-router',
  '@tanstack/react-router': 'tanstack',
}

function shim(name, base) {
  const basename = JSON.stringify(base.replace(/\/$/, ''))
  const head = `import * as real from ${JSON.stringify(name)}\nexport * from ${JSON.stringify(name)}\n`
  if (ROUTERS[name] === 'tanstack') {
    return `${head}
export function createRouter(options) {
  return real.createRouter(options?.basepath == null ? { ...options, basepath: ${basename} } : options)
}
`
  }
  return `${head}import { createElement } from 'react'
export function BrowserRouter(props) {
  return createElement(real.BrowserRouter, props.basename == null ? { ...props, basename: ${basename} } : props)
}
export function createBrowserRouter(routes, options) {
  return real.createBrowserRouter(routes, options?.basename == null ? { ...options, basename: ${basename} } : options)
}
`
}

const JSX_DEV = 'react/jsx-dev-runtime'
const BRIDGE = 'reactbox'
const BRIDGE_ID = '\0reactbox-app.js'
const GENERATION_PATH = '/__reactbox/generation'
const HEARTBEAT_MS = 30_000
const WATCH_READY_MS = 5_000

// Vite answers before its file watcher has made its first scan, and a file
// written meanwhile is a change it never hears of: a module it served before
// would be served as it was until the file changes again.  So nothing is
// answered before the watcher watches (nor, then, the probe that says a preview
// runs); a watcher that says nothing in WATCH_READY_MS is not waited for longer.
function watching(server) {
  const watcher = server.watcher
  let ready = server.config.server.watch === null || watcher._readyEmitted === true
  if (ready) return
  const scanned = new Promise((resolve) => {
    watcher.once('ready', resolve)
    setTimeout(resolve, WATCH_READY_MS).unref()
  }).then(() => {
    ready = true
  })
  server.middlewares.use((req, res, next) => (ready ? next() : scanned.then(() => next())))
}

function proxiedUnderBase(server) {
  const base = server.config.base
  const keys = Object.keys(server.config.server.proxy || {})
  if (!keys.length || base === '/') return
  const matches = (url) =>
    keys.some((key) => (key.startsWith('^') ? new RegExp(key).test(url) : url.startsWith(key)))
  server.middlewares.use((req, _res, next) => {
    if (req.url.startsWith(base)) {
      const below = '/' + req.url.slice(base.length)
      if (matches(below)) req.url = below
    }
    next()
  })
}

// Vite lets go of a changed file's module only after every plugin's watchChange
// hook has answered, a few ticks after its watcher's event: an answer served
// meanwhile is the old module, labelled with the generation the event counted,
// and the proxy would replay it until the next change.  So the generation is
// counted again the moment the module graph has let go (HMR on or off).
function afterForgetting(server, bump) {
  const graphs = server.environments
    ? Object.values(server.environments).map((environment) => environment.moduleGraph)
    : [server.moduleGraph]
  for (const graph of new Set(graphs)) {
    for (const method of ['onFileChange', 'onFileDelete']) {
      const forget = graph?.[method]
      if (typeof forget !== 'function') continue
      graph[method] = function (...args) {
        try {
          return forget.apply(this, args)
        } finally {
          bump()
        }
      }
    }
  }
}

function generations(server) {
  const run = Math.random().toString(36).slice(2, 10)
  let n = 0
  const followers = new Set()
  const current = () => `${run}.${n}`
  let saying = false
  const bump = () => {
    n += 1
    if (saying) return
    saying = true // many events at once (a checkout) are said as one line
    setImmediate(() => {
      saying = false
      for (const res of followers) res.write(current() + '\n')
    })
  }
  server.watcher.on('all', bump) // at once: answers kept from before are not replayed
  afterForgetting(server, bump) // and once Vite no longer serves what it had
  // Vite 5's server.hot broadcasts to server.ws; from Vite 6 the client
  // environment's channel (server.hot is deprecated there).
  const channels = server.environments
    ? [server.ws, server.environments.client?.hot]
    : [server.ws, server.hot]
  for (const channel of new Set(channels)) {
    if (typeof channel?.send !== 'function') continue
    const send = channel.send
    channel.send = function (...args) {
      bump()
      return send.apply(this, args)
    }
  }
  const heartbeat = setInterval(() => {
    for (const res of followers) res.write(current() + '\n')
  }, HEARTBEAT_MS)
  heartbeat.unref()
  server.middlewares.use((req, res, next) => {
    if (req.url === GENERATION_PATH) {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' })
      res.write(current() + '\n')
      followers.add(res)
      req.on('close', () => followers.delete(res))
      return
    }
    res.setHeader('X-Reactbox-Generation', current())
    next()
  })
}

function tagged(root) {
  const prefix = JSON.stringify(root.replace(/\/?$/, '/'))
  return `import { jsxDEV as real, Fragment } from ${JSON.stringify(JSX_DEV)}
export { Fragment }
const prefix = ${prefix}
export function jsxDEV(type, props, key, isStatic, source, self) {
  if (typeof type === 'string' && source && source.fileName && props && !('data-reactbox-src' in props)) {
    const file = source.fileName.startsWith(prefix) ? source.fileName.slice(prefix.length) : null
    if (file && !file.startsWith('node_modules/')) {
      props = { ...props, 'data-reactbox-src': file + ':' + source.lineNumber + ':' + source.columnNumber }
    }
  }
  return real(type, props, key, isStatic, source, self)
}
`
}

function foreignBridge(root) {
  try {
    const manifest = fs.readFileSync(path.join(root, 'node_modules', BRIDGE, 'package.json'), 'utf8')
    return !JSON.parse(manifest).jupyterReactbox
  } catch {
    return false
  }
}

export function reactbox({ root }) {
  const installed = Object.keys(ROUTERS).filter((name) =>
    fs.existsSync(path.join(root, 'node_modules', name, 'package.json')),
  )
  const tagging = fs.existsSync(path.join(root, 'node_modules', 'react', 'jsx-dev-runtime.js'))
  const shimmed = tagging ? [...installed, JSX_DEV] : installed
  const bridged = !foreignBridge(root)
  let base = '/'
  return {
    name: 'jupyter-reactbox',
    enforce: 'pre',
    config: () => ({ optimizeDeps: { include: shimmed } }),
    configResolved(config) {
      base = config.base
    },
    resolveId(id, importer, options) {
      if (id === BRIDGE && bridged) return BRIDGE_ID
      if (!shimmed.includes(id) || options?.ssr || !importer) return null
      if (importer.startsWith(PREFIX) || importer.includes('/node_modules/')) return null
      return PREFIX + id
    },
    configureServer(server) {
      watching(server)
      proxiedUnderBase(server)
      generations(server)
    },
    load(id) {
      if (id === BRIDGE_ID) return fs.readFileSync(new URL('./reactbox-app.js', import.meta.url), 'utf8')
      if (!id.startsWith(PREFIX)) return null
      const name = id.slice(PREFIX.length)
      return name === JSX_DEV ? tagged(root) : shim(name, base)
    },
  }
}
