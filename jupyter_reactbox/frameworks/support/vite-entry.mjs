// What the Vite launchers (vite-serve.mjs, vite-build.mjs) share: their options,
// and the app's own Vite.
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { nearest } from './nearest.mjs'

// The value of `--<name>` on the command line; the launcher exits if it is missing.
export function option(name) {
  const at = process.argv.indexOf(`--${name}`)
  if (at < 0 || at + 1 >= process.argv.length) {
    console.error(`${path.basename(process.argv[1])}: --${name} is required`)
    process.exit(2)
  }
  return process.argv[at + 1]
}

// The app's own Vite (the nearest up the tree: a workspace hoists it to its top);
// its package.json says where its Node API lives.
export function viteEntry(root) {
  const dir = nearest(path.join('node_modules', 'vite'), root) ?? path.join(root, 'node_modules', 'vite')
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  let entry = pkg.exports?.['.']?.import ?? pkg.module ?? pkg.main ?? 'dist/node/index.js'
  if (typeof entry === 'object') entry = entry.default
  return pathToFileURL(path.join(dir, entry)).href
}
