// An Astro site's dev server, as `astro dev` starts it: the app's own Astro (the
// nearest up the tree), whose CLI file its package.json names (astro.js before
// Astro 6, bin/astro.mjs since), given the host and port.
//   node /opt/reactbox/support/astro-dev.mjs --host 0.0.0.0 --port 8000
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { nearest } from './nearest.mjs'

const root = nearest(path.join('node_modules', 'astro'))
if (!root) {
  console.error('astro-dev: this app has no node_modules/astro (did its install finish?)')
  process.exit(1)
}
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.astro ?? 'astro.js'
const cli = path.join(root, bin)
createRequire(import.meta.url)('./provide.cjs')(process.cwd()) // the notebook bridge
process.argv = [process.argv[0], cli, 'dev', ...process.argv.slice(2)]
await import(pathToFileURL(cli).href)
