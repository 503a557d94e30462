// What jupyter-reactbox adds to a Vite app's dev server, without a change to the
// app's files: client routers that see paths relative to the preview.
//
// The page's path carries the preview's base (/user/x/reactbox/preview/<id>/<token>/),
// so a BrowserRouter, createBrowserRouter or TanStack Router with no basename
// matches no route.  The app's own imports of those packages resolve to a small
// module that re-exports the package and gives those three a default basename of
// the base; a basename the app sets itself is kept.  Imports from inside
// node_modules, and server-side ones, get the package untouched.
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

export function reactbox({ root }) {
  const installed = Object.keys(ROUTERS).filter((name) =>
    fs.existsSync(path.join(root, 'node_modules', name, 'package.json')),
  )
  let base = '/'
  return {
    name: 'jupyter-reactbox',
    enforce: 'pre',
    config: () => ({ optimizeDeps: { include: installed } }),
    configResolved(config) {
      base = config.base
    },
    resolveId(id, importer, options) {
      if (!installed.includes(id) || options?.ssr || !importer) return null
      if (importer.startsWith(PREFIX) || importer.includes('/node_modules/')) return null
      return PREFIX + id
    },
    load(id) {
      return id.startsWith(PREFIX) ? shim(id.slice(PREFIX.length), base) : null
    },
  }
}
