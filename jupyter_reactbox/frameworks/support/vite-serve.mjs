// The dev server of a Vite app as jupyter-reactbox runs it in the sandbox: the
// app's own Vite and its own config, plus the plugin in vite-plugin.mjs, behind
// the preview's base path.  Run from the app's folder:
//   node /opt/reactbox/support/vite-serve.mjs --host 0.0.0.0 --port 8000 --base /prefix/
// (the Vite CLI would take no plugin without a change to the app's config).
import { createRequire } from 'node:module'
import { option, viteEntry } from './vite-entry.mjs'
import { reactbox } from './vite-plugin.mjs'

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
