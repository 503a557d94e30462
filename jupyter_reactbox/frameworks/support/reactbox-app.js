// The app's side of its bridge to the notebook (jupyter-reactbox).
//
//   import { call, emit, useNotebook, useNotebookState, useConnection } from 'reactbox'
//
//   const result = await call('predict', { price: 3 })   // a function the notebook exposed
//   emit('selected', row)                                // to the notebook's shop.on('selected')
//   const prices = useNotebook('prices', [])             // what shop.send('prices', df) sent
//   const [filter, setFilter] = useNotebookState('filter', '')   // shop.state['filter']
//
// The preview's dev server provides this module (nothing is added to the app's
// package.json). It talks to the notebook through the server that serves the
// preview, over one websocket at the preview's own path. Outside a
// jupyter-reactbox preview (a production build, a plain `npm run dev`) it loads
// all the same: calls reject with a NotebookError that says so, hooks give their
// initial values, and nothing else happens.
//
// Written for every bundler an app may have (webpack 4 included): no optional
// chaining, no nullish coalescing, no object spread.
import * as React from 'react'

const page = typeof window !== 'undefined' ? window.__reactbox : undefined
const NOWHERE =
  'this app is not running in a jupyter-reactbox preview, so there is no notebook to reach'

export class NotebookError extends Error {
  constructor(type, message, status) {
    super(message)
    this.name = 'NotebookError'
    /** 'NotConnected', 'NotExposed', 'Timeout', 'TooManyCalls', 'BadValue', 'Unavailable',
     * or the Python exception's type ('ValueError') when the notebook's function raised. */
    this.type = type
    this.status = status
  }
}

let status = Object.freeze({ connected: false, functions: [], events: [], maxBytes: 4 << 20 })
const statusListeners = new Set()
const values = new Map()
const valueListeners = new Map()
const shared = new Map()
const stateListeners = new Map()
const pending = new Map()
const queue = []
let socket = null
let nextId = 0
let retry = 500

function notify(listeners, name, value) {
  const set = listeners.get(name)
  if (set) for (const fn of Array.from(set)) fn(value)
}

function subscribe(listeners, name, fn) {
  if (!listeners.has(name)) listeners.set(name, new Set())
  listeners.get(name).add(fn)
  return () => listeners.get(name).delete(fn)
}

function setStatus(next) {
  status = Object.freeze(next)
  for (const fn of Array.from(statusListeners)) fn(status)
}

function receive(message) {
  const at = message.indexOf('\n')
  const header = JSON.parse(at < 0 ? message : message.slice(0, at))
  const body = at < 0 ? undefined : JSON.parse(message.slice(at + 1))
  if (header.t === 'hello' || header.t === 'status') {
    setStatus({
      connected: header.connected,
      functions: header.functions,
      events: header.events,
      maxBytes: header.max_bytes || status.maxBytes,
    })
  } else if (header.t === 'result') {
    const waiting = pending.get(header.id)
    if (!waiting) return
    pending.delete(header.id)
    if (header.ok) waiting.resolve(body)
    else waiting.reject(new NotebookError(body.type, body.message, body.status))
  } else if (header.t === 'value') {
    values.set(header.name, body)
    notify(valueListeners, header.name, body)
  } else if (header.t === 'state') {
    shared.set(header.key, body)
    notify(stateListeners, header.key, body)
  } else if (header.t === 'error') {
    console.warn('[reactbox] ' + body.message)
  }
}

function connect() {
  if (socket || !page) return
  const url = new URL(page.base + '__reactbox/bridge', window.location.href)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  socket = new WebSocket(url.href)
  socket.onopen = () => {
    retry = 500
    for (const message of queue.splice(0)) socket.send(message)
  }
  socket.onmessage = (event) => receive(event.data)
  socket.onclose = () => {
    socket = null
    const lost = new NotebookError(
      'NotConnected',
      'the page lost its connection to the notebook; try again',
      503,
    )
    for (const waiting of pending.values()) waiting.reject(lost)
    pending.clear()
    setStatus({ connected: false, functions: [], events: [], maxBytes: status.maxBytes })
    setTimeout(connect, retry)
    retry = Math.min(retry * 2, 10000)
  }
}

function post(header, value) {
  let body
  try {
    body = value === undefined ? '' : '\n' + JSON.stringify(value)
  } catch (error) {
    throw new NotebookError('BadValue', 'not JSON: ' + error.message, 400)
  }
  const message = JSON.stringify(header) + body
  if (message.length > status.maxBytes) {
    throw new NotebookError(
      'BadValue',
      'too large: ' + message.length + ' bytes (at most ' + status.maxBytes + ')',
      413,
    )
  }
  connect()
  if (socket && socket.readyState === 1) socket.send(message)
  else queue.push(message)
}

/** Calls a function the notebook exposed (`shop.expose(fn)`), with JSON arguments;
 * its JSON result. Rejects with a NotebookError: the Python exception's type and
 * message, or why the call could not be made. */
export function call(name, ...args) {
  return callWith({}, name, ...args)
}

/** `call` with options: `{ timeout }` in seconds (the server's limit is the most). */
export function callWith(options, name, ...args) {
  if (!page) return Promise.reject(new NotebookError('Unavailable', NOWHERE + ' (' + name + ')', 503))
  return new Promise((resolve, reject) => {
    const id = ++nextId
    const header = { t: 'call', id, name }
    if (options && options.timeout) header.timeout = options.timeout
    pending.set(id, { resolve, reject })
    try {
      post(header, args)
    } catch (error) {
      pending.delete(id)
      reject(error)
    }
  })
}

/** Sends an event to the notebook's handlers (`shop.on(name, fn)`). */
export function emit(name, value) {
  if (!page) return
  post({ t: 'emit', name }, value === undefined ? null : value)
}

/** `fn(value)` whenever the notebook sends a value under `name`; returns the unsubscriber. */
export function on(name, fn) {
  connect()
  return subscribe(valueListeners, name, fn)
}

/** The last value the notebook sent under `name` (undefined before any). */
export function latest(name) {
  return values.get(name)
}

export function getState(key) {
  return shared.get(key)
}

export function setState(key, value) {
  shared.set(key, value)
  notify(stateListeners, key, value)
  if (page) post({ t: 'state', key }, value === undefined ? null : value)
}

export function onState(key, fn) {
  connect()
  return subscribe(stateListeners, key, fn)
}

/** Whether the notebook is connected, and what it serves. */
export function connection() {
  return status
}

export function onConnection(fn) {
  connect()
  statusListeners.add(fn)
  return () => statusListeners.delete(fn)
}

function useExternal(subscribeTo, read) {
  if (React.useSyncExternalStore) return React.useSyncExternalStore(subscribeTo, read, read)
  const [, rerender] = React.useReducer((n) => n + 1, 0) // React 16 and 17
  React.useEffect(() => subscribeTo(rerender), [subscribeTo])
  return read()
}

/** The last value the notebook sent under `name` (`initial` before any); the
 * component renders again, state kept, when a new one arrives. */
export function useNotebook(name, initial) {
  const subscribeTo = React.useCallback((fn) => on(name, fn), [name])
  const value = useExternal(subscribeTo, () => values.get(name))
  return value === undefined ? initial : value
}

/** A value shared with the notebook (`shop.state[key]`): [value, setValue]. */
export function useNotebookState(key, initial) {
  const subscribeTo = React.useCallback((fn) => onState(key, fn), [key])
  const value = useExternal(subscribeTo, () => shared.get(key))
  const set = React.useCallback((next) => setState(key, next), [key])
  return [value === undefined ? initial : value, set]
}

/** `{ connected, functions, events }`, kept current. */
export function useConnection() {
  return useExternal(onConnection, connection)
}

if (page) connect()
