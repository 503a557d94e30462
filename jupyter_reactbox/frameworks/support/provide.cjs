'use strict'
// Puts the app's side of the notebook bridge (reactbox-app.js and its types) at
// node_modules/reactbox of the app's folder, so `import ... from 'reactbox'`
// resolves with every bundler and type checker, without a change to the app's
// package.json. Runs in the sandbox, in the folder the sandbox owns anyway. A
// package called reactbox that the app installed itself is left as it is.
const fs = require('fs')
const path = require('path')

const FILES = { 'index.js': 'reactbox-app.js', 'index.d.ts': 'reactbox-app.d.ts' }
const MANIFEST = JSON.stringify(
  {
    name: 'reactbox',
    private: true,
    type: 'module',
    main: 'index.js',
    module: 'index.js',
    types: 'index.d.ts',
    jupyterReactbox: 'the app side of the notebook bridge, provided by the preview',
  },
  null,
  2,
)

module.exports = function provide(appDir) {
  const dir = path.join(appDir, 'node_modules', 'reactbox')
  try {
    const found = fs.readFileSync(path.join(dir, 'package.json'), 'utf8')
    if (!JSON.parse(found).jupyterReactbox) return
  } catch (error) {
    if (error.code !== 'ENOENT') return // not ours to replace
  }
  try {
    fs.mkdirSync(dir, { recursive: true })
    for (const [name, source] of Object.entries(FILES)) {
      const text = fs.readFileSync(path.join(__dirname, source), 'utf8')
      const target = path.join(dir, name)
      let current = null
      try {
        current = fs.readFileSync(target, 'utf8')
      } catch {}
      if (current !== text) fs.writeFileSync(target, text)
    }
    fs.writeFileSync(path.join(dir, 'package.json'), MANIFEST + '\n')
  } catch (error) {
    console.warn(`jupyter-reactbox: the 'reactbox' module could not be provided (${error.message})`)
  }
}
