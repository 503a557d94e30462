// The production build of a Vite app as jupyter-reactbox runs it in the sandbox:
// the app's own Vite and config, plus the plugin that gives client routers the
// base they will be served under, written to a folder outside the app.  Run
// from the app's folder:
//   node /opt/reactbox/support/vite-build.mjs --base /prefix/ --out /out
import { createRequire } from 'node:module'
import { option, viteEntry } from './vite-entry.mjs'
import { reactbox } from './vite-plugin.mjs'

const root = process.cwd()
createRequire(import.meta.url)('./provide.cjs')(root)
const vite = await import(viteEntry(root))
console.log(`jupyter-reactbox: vite ${vite.version ?? '?'} build`)
try {
  await vite.build({
    root,
    base: option('base'),
    mode: 'production',
    build: { outDir: option('out'), emptyOutDir: true },
    plugins: [reactbox({ root })],
  })
} catch (error) {
  console.error(error?.message ?? error)
  process.exit(1)
}
