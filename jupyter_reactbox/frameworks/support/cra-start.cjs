'use strict'
// The dev server of a create-react-app app as jupyter-reactbox runs it in the
// sandbox, for every react-scripts from 2 to 5.  Run from the app's folder with
// PUBLIC_URL (the preview's base, ending in /) and WDS_SOCKET_PATH set:
//   node /opt/reactbox/support/cra-start.cjs
// What older releases need, without a change to the app's files:
// - react-scripts < 5 (webpack 4) hashes with md4, which OpenSSL 3 keeps in its
//   legacy provider: Node is started again with --openssl-legacy-provider.
// - react-scripts < 3.4 ignores PUBLIC_URL in development and serves from /:
//   its webpack and dev-server configs get the base as their public path, and
//   public/ is served under the base too.
// - react-scripts 5 writes no tsconfig.json on start (see below).
// - webpack-dev-server 3.2 and later (react-scripts 3 and 4) listen for their
//   socket where the page connects; the preview proxy sends the socket to /ws,
//   as for webpack-dev-server 4, so the server listens there.  Older ones
//   (react-scripts 2) know no such option and refuse it.
// - The app's "proxy" (to its companion API, see companions.mjs) gets the paths
//   it would get outside a preview: without the base.
// - Node 17 and later no longer honour folder mappings in a package's "exports"
//   ("./": "./"), which packages of react-scripts 4's time still used (postcss
//   8.1, required as "postcss/lib/tokenize" by postcss-safe-parser): such a
//   subpath is resolved to its file, as the package meant.
const fs = require('fs')
const Module = require('module')
const path = require('path')

// The app's react-scripts: the nearest up the tree (a workspace hoists it to its top).
const scripts = path.dirname(require.resolve('react-scripts/package.json', { paths: [process.cwd()] }))
const version = JSON.parse(fs.readFileSync(path.join(scripts, 'package.json'), 'utf8')).version
const [major, minor] = version.split('.').map(Number)

if (major < 5 && !process.execArgv.includes('--openssl-legacy-provider')) {
  const { spawn } = require('child_process')
  const argv = ['--openssl-legacy-provider', ...process.execArgv, __filename, ...process.argv.slice(2)]
  const child = spawn(process.execPath, argv, { stdio: 'inherit' })
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => child.kill(signal))
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
  return
}

const resolveFilename = Module._resolveFilename
Module._resolveFilename = function (request, parent, ...rest) {
  try {
    return resolveFilename.call(this, request, parent, ...rest)
  } catch (error) {
    const subpath = /^((?:@[^/]+\/)?[^/.][^/]*)\/(.+)$/.exec(request)
    if (error.code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED' || !subpath || !parent) throw error
    for (const folder of Module._nodeModulePaths(path.dirname(parent.filename))) {
      const root = path.join(folder, subpath[1])
      if (fs.existsSync(path.join(root, 'package.json'))) {
        return resolveFilename.call(this, path.join(root, subpath[2]), parent, ...rest)
      }
    }
    throw error
  }
}

const base = process.env.PUBLIC_URL || '/'
require('./provide.cjs')(process.cwd()) // `import ... from 'reactbox'`: the notebook bridge
const servesFromRoot = major < 3 || (major === 3 && minor < 4)

function patch(rel, change) {
  const file = path.join(scripts, 'config', rel)
  if (!fs.existsSync(file)) return
  const exported = require(file)
  require.cache[file].exports =
    typeof exported === 'function'
      ? (...args) => change(exported(...args))
      : change(exported)
}

process.env.BABEL_ENV = 'development'
process.env.NODE_ENV = 'development'
require(path.join(scripts, 'config', 'env')) // reads .env files first, as start.js does

if (servesFromRoot) {
  const publicPath = (config) => {
    config.output.publicPath = base
    return config
  }
  patch('webpack.config.js', publicPath)
  patch('webpack.config.dev.js', publicPath) // react-scripts 2
}
if (major < 5) {
  // Its page client would take WDS_SOCKET_PORT=0 (webpack-dev-server 4: "the page's
  // port") as port 0; unset, it uses the page's port.
  delete process.env.WDS_SOCKET_PORT
  const wdsVersion = JSON.parse(
    fs.readFileSync(require.resolve('webpack-dev-server/package.json', { paths: [scripts] }), 'utf8'),
  ).version
  const [wdsMajor, wdsMinor] = wdsVersion.split('.').map(Number)
  patch('webpackDevServer.config.js', (config) => {
    if (wdsMajor > 3 || (wdsMajor === 3 && wdsMinor >= 2)) config.sockPath = '/ws'
    if (servesFromRoot) {
      config.publicPath = base.replace(/\/$/, '')
      config.historyApiFallback = { ...config.historyApiFallback, index: base }
      // public/ is served at / by these releases: serve it under the base as well.
      const wds = require.resolve('webpack-dev-server', { paths: [scripts] })
      const serveStatic = require(require.resolve('serve-static', { paths: [wds] }))
      const files = serveStatic(path.join(process.cwd(), 'public'), { index: false })
      const before = config.before
      config.before = (app, server) => {
        app.use(base.replace(/\/$/, ''), files)
        if (before) before(app, server)
      }
    }
    return config
  })
}
const devUtils = path.join(
  path.dirname(require.resolve('react-dev-utils/package.json', { paths: [scripts] })),
  'WebpackDevServerUtils.js',
)
if (base !== '/' && fs.existsSync(devUtils)) {
  const utils = require(devUtils)
  const prepareProxy = utils.prepareProxy
  const strip = base.replace(/\/$/, '')
  utils.prepareProxy = (...args) => {
    const proxies = prepareProxy(...args)
    if (!Array.isArray(proxies)) return proxies
    const below = (url) => (url.startsWith(strip + '/') ? url.slice(strip.length) : url)
    return proxies.map((proxy) => ({ ...proxy, pathRewrite: below }))
  }
}
// react-scripts 5 writes a TypeScript app's tsconfig.json only when create-react-app
// makes the app (releases before 5 did on every start): without it, webpack
// resolves no .tsx module. A template uploaded as it ships gets one here, as
// create-react-app would have written it.
const verifyTypeScript = path.join(scripts, 'scripts', 'utils', 'verifyTypeScriptSetup.js')
if (major >= 5 && fs.existsSync(verifyTypeScript) && !fs.existsSync('tsconfig.json')) {
  require(verifyTypeScript)()
}
console.log(`jupyter-reactbox: react-scripts ${version}`)
require(path.join(scripts, 'scripts', 'start.js'))
