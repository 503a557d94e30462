'use strict'
// The production build of a create-react-app app as jupyter-reactbox runs it in the
// sandbox, for react-scripts 2 to 5.  Run from the app's folder with PUBLIC_URL (the
// base it will be served under) and BUILD_PATH (where the build goes) set:
//   node /opt/reactbox/support/cra-build.cjs
// react-scripts < 5 hashes with md4, which OpenSSL 3 keeps in its legacy provider;
// releases before 4.0.2 know no BUILD_PATH and write ./build, which is moved there.
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const scripts = path.dirname(require.resolve('react-scripts/package.json', { paths: [process.cwd()] }))
const version = JSON.parse(fs.readFileSync(path.join(scripts, 'package.json'), 'utf8')).version
const major = Number(version.split('.')[0])
console.log(`jupyter-reactbox: react-scripts ${version} build`)
require('./provide.cjs')(process.cwd()) // `import ... from 'reactbox'` resolves
const out = process.env.BUILD_PATH
const node = major < 5 ? ['--openssl-legacy-provider'] : []
const run = spawnSync(process.execPath, [...node, path.join(scripts, 'scripts', 'build.js')], {
  stdio: 'inherit',
  env: { ...process.env, NODE_ENV: 'production', BABEL_ENV: 'production' },
})
if (run.status !== 0) process.exit(run.status ?? 1)
if (out && !fs.existsSync(path.join(out, 'index.html')) && fs.existsSync('build/index.html')) {
  fs.cpSync('build', out, { recursive: true })
}
