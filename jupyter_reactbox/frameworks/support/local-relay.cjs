'use strict'
// The dev server of the local backend, inside its sandbox (bubblewrap), which has
// no network but its own loopback:
//   node local-relay.cjs <fd> <port> <dev server argv...>
// starts the dev server, and relays each connection accepted on <fd> (a listening
// Unix socket the Jupyter server made in a folder of its own, which the sandbox
// cannot see, and passed in) to 127.0.0.1:<port>, where the dev server listens.
// It ends with the dev server, with its code.
const net = require('net')
const { spawn } = require('child_process')

const [fd, port, ...argv] = process.argv.slice(2)
if (!fd || !port || argv.length === 0) {
  console.error('local-relay: usage: <fd> <port> <argv...>')
  process.exit(2)
}

const relay = net.createServer((client) => {
  const upstream = net.connect(Number(port), '127.0.0.1')
  const end = () => {
    client.destroy()
    upstream.destroy()
  }
  for (const side of [client, upstream]) {
    side.on('error', end)
    side.on('close', end)
  }
  client.pipe(upstream)
  upstream.pipe(client)
})
relay.listen({ fd: Number(fd) })

const child = spawn(argv[0], argv.slice(1), { stdio: 'inherit' })
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)))
child.on('error', (err) => {
  console.error(`local-relay: ${argv[0]}: ${err.message}`)
  process.exit(127)
})
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(signal, () => child.kill(signal))
}
