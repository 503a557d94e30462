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

export function reactbox({ root }) {
  const installed = Object.keys(ROUTERS).filter((name) =>
    fs.existsSync(path.join(root, 'node_modules', name, 'package.json')),
  )
  const tagging = fs.existsSync(path.join(root, 'node_modules', 'react', 'jsx-dev-runtime.js'))
  const shimmed = tagging ? [...installed, JSX_DEV] : installed
  let base = '/'
  return {
    name: 'jupyter-reactbox',
    enforce: 'pre',
    config: () => ({ optimizeDeps: { include: shimmed } }),
    configResolved(config) {
      base = config.base
    },
    resolveId(id, importer, options) {
      if (!shimmed.includes(id) || options?.ssr || !importer) return null
      if (importer.startsWith(PREFIX) || importer.includes('/node_modules/')) return null
      return PREFIX + id
    },
    load(id) {
      if (!id.startsWith(PREFIX)) return null
      const name = id.slice(PREFIX.length)
      return name === JSX_DEV ? tagged(root) : shim(name, base)
    },
  }
}
