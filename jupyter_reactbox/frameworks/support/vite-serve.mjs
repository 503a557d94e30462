// The dev server of a Vite app as jupyter-reactbox runs it in the sandbox: the
// app's own Vite and its own config, plus the plugin in vite-plugin.mjs, behind
// the preview's base path.  Run from the app's folder:
//   node /opt/reactbox/support/vite-serve.mjs --host 0.0.0.0 --port 8000 --base /prefix/
// (the Vite CLI would take no plugin without a change to the app's config).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { nearest } from './nearest.mjs'
import { reactbox } from './vite-plugin.mjs'

function option(name) {
  const at = process.argv.indexOf(`--${name}`)
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`vite-serve: --${name} is required`)
    process.exit(2)
  }
  return process.argv[at + 1]
}

// The app's own Vite (the nearest up the tree: a workspace hoists it to its top);
// its package.json says where its Node API lives.
function viteEntry(root) {
  const dir = nearest(path.join('node_modules', 'vite'), root) ?? path.join(root, 'node_modules', 'vite')
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  let entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main ?? 'dist/node/index.js'
  if (typeof entry === 'object') entry = entry.default
  return pathToFileURL(path.join(dir, entry)).href
}

const started = performance.now()
const root = process.cwd()
createRequire(import.meta.url)('./provide.cjs')(root)
const vite = await import(viteEntry(root))
const server = await vite.createServer({
  root,
  base: option('base'),
  server: { host: option('host'), port: Number(option('port')), strictPort: true, open: false },
  plugins: [reactbox({ root })],
})
await server.listen()
const ms = Math.round(performance.now() - started)
console.log(`\n  VITE v${vite.version ?? '?'}  ready in ${ms} ms (jupyter-reactbox)\n`)
server.printUrls?.()
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close().finally(() => process.exit(0)))
}
