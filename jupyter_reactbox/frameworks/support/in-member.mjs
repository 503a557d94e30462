// A workspace's member app, run where its authors run it: from its own folder,
// with the workspace's dependencies installed at the top.
//   node /opt/reactbox/support/in-member.mjs apps/web node <script> [args...]
// Changes to the member's folder and runs <script> in this same process (no
// second process between the sandbox and the dev server, signals reach it).  A
// script given inside node_modules (Next's bin) is the nearest one up the tree:
// a workspace hoists its members' dependencies to its top.
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { nearest } from './nearest.mjs'

const [member, node, script, ...rest] = process.argv.slice(2)
if (!member || node !== 'node' || !script) {
  console.error('in-member: usage: in-member.mjs <folder> node <script> [args...]')
  process.exit(2)
}
try {
  process.chdir(member)
} catch (error) {
  console.error(`The app's folder ${member} of this workspace cannot be entered: ${error.message}`)
  process.exit(1)
}

const file = path.isAbsolute(script) ? script : nearest(script) ?? path.resolve(script)
process.argv = [process.argv[0], file, ...rest]
if (file.endsWith('.mjs')) {
  await import(pathToFileURL(file).href)
} else {
  createRequire(import.meta.url)(file)
}
