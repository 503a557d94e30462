'use strict'
// The production build of a Next.js app as jupyter-reactbox runs it in the sandbox:
// a static export (next-preload.cjs makes `output: 'export'` Next's default, with the
// base as basePath, unoptimized images and a build folder of its own, so a dev
// server running beside it keeps its .next), copied to the folder given.
//   node /opt/reactbox/support/next-build.cjs /out
// An app that needs a server (API routes, server actions, dynamic routes with no
// generateStaticParams) fails here with Next's own words.
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const out = process.argv[2]
const next = require.resolve('next/dist/bin/next', { paths: [process.cwd()] })
const run = spawnSync(process.execPath, [next, 'build'], { stdio: 'inherit', env: process.env })
if (run.status !== 0) process.exit(run.status ?? 1)
const made = ['.reactbox-next', 'out'].find((d) => fs.existsSync(path.join(d, 'index.html')))
if (!made) {
  console.error('next build wrote no static export (no index.html): the app needs a server')
  process.exit(1)
}
fs.cpSync(made, out, { recursive: true })
