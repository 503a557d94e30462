// An app whose dev script starts a companion beside its UI, as many do:
//   "dev": "concurrently \"npm run server\" \"npm start\"",
//   "server": "json-server --watch db.json --port 5000"
// runs here, in the sandbox, as that script would: every command of it but the
// UI's dev server is started as it is written (a shell, the app's folder, its
// node_modules/.bin first on PATH, without the UI's PORT and HOST), and the UI
// is jupyter-reactbox's own dev server, the command after "--":
//   node /opt/reactbox/support/companions.mjs -- node .../vite-serve.mjs --base ...
// The companions' output goes to the log with their names; when the UI's dev
// server ends, so do they, and a companion that ends is said in the log.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

const RUNNERS = /\b(concurrently|npm-run-all|run-p)\b/
const UI = /\b(react-scripts|craco|react-app-rewired)\s+start\b|\bvite(\s+(dev|serve))?(\s|$)|\bnext\s+dev\b/
const RUN = /^(?:npm\s+(?:run(?:-script)?\s+)?|yarn\s+(?:run\s+)?|pnpm\s+(?:run\s+)?|bun\s+run\s+)([\w:.-]+)\s*$/

const ui = process.argv.slice(process.argv.indexOf('--') + 1)
const root = process.cwd()
const scripts = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts || {}

// The quoted commands of a concurrently line, or the script names of npm-run-all's.
function commandsOf(line) {
  const [runner] = line.match(RUNNERS) || []
  if (!runner) return [line]
  const rest = line.slice(line.indexOf(runner) + runner.length)
  if (runner === 'concurrently') {
    const quoted = [...rest.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'/g)].map((m) => (m[1] ?? m[2]).replace(/\\"/g, '"'))
    return quoted.filter((command) => !/^[\w,-]+$/.test(command) || scripts[command])
  }
  return rest.split(/\s+/).filter((word) => word && !word.startsWith('-')).map((name) => `npm run ${name}`)
}

// A command as the shell would end up running it: `npm run x` is script x.
function resolved(command, seen = new Set()) {
  const run = command.trim().match(RUN)
  const name = run ? run[1] : command.trim() === 'npm start' ? 'start' : null
  if (name && scripts[name] && !seen.has(name)) {
    seen.add(name)
    return commandsOf(scripts[name]).flatMap((c) => resolved(c, seen))
  }
  return [command]
}

const line = [scripts.dev, scripts.start].find((s) => s && RUNNERS.test(s)) || ''
const companions = commandsOf(line).flatMap((c) => resolved(c)).filter((c) => !UI.test(c))

// Every node_modules/.bin from here up (a workspace's member finds its root's), as npm does.
const bins = []
for (let dir = root; ; dir = path.dirname(dir)) {
  bins.push(path.join(dir, 'node_modules', '.bin'))
  if (dir === path.dirname(dir)) break
}
const env = { ...process.env, PATH: `${bins.join(':')}:${process.env.PATH}` }
for (const name of ['PORT', 'HOST', 'BROWSER', 'NODE_OPTIONS']) delete env[name]
const children = []
for (const command of companions) {
  const label = command.length > 40 ? command.slice(0, 37) + '...' : command
  console.log(`[jupyter-reactbox] companion: ${command}`)
  const child = spawn('/bin/sh', ['-c', command], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (data) => {
      for (const text of String(data).split('\n')) if (text) process.stdout.write(`[${label}] ${text}\n`)
    })
  }
  child.on('exit', (code, signal) => console.log(`[jupyter-reactbox] companion ended (${signal || code}): ${command}`))
  children.push(child)
}

const main = spawn(ui[0], ui.slice(1), { stdio: 'inherit' })
const stop = (signal) => {
  for (const child of [...children, main]) if (child.exitCode === null) child.kill(signal)
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => stop(signal))
main.on('exit', (code, signal) => {
  stop('SIGTERM')
  process.exit(code ?? (signal ? 1 : 0))
})
