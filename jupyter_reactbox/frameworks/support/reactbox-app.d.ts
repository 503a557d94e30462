// Types of the app's side of its bridge to the notebook (jupyter-reactbox).

/** Why a call failed: the Python exception's type ('ValueError') when the notebook's
 * function raised, else one of the bridge's own. */
export class NotebookError extends Error {
  readonly name: 'NotebookError'
  readonly type:
    | 'NotConnected'
    | 'NotExposed'
    | 'NotListened'
    | 'Timeout'
    | 'TooManyCalls'
    | 'BadValue'
    | 'Unavailable'
    | (string & {})
  readonly status: number | undefined
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

export interface Connection {
  readonly connected: boolean
  /** The functions the notebook exposed. */
  readonly functions: readonly string[]
  /** The events the notebook listens to. */
  readonly events: readonly string[]
  readonly maxBytes: number
}

/** Calls a function the notebook exposed (`shop.expose(fn)`) with JSON arguments. */
export function call<T = unknown>(name: string, ...args: unknown[]): Promise<T>
/** `call`, with a timeout in seconds (the server's own limit is the most). */
export function callWith<T = unknown>(
  options: { timeout?: number },
  name: string,
  ...args: unknown[]
): Promise<T>
/** Sends an event to the notebook's handlers (`shop.on(name, fn)`). */
export function emit(name: string, value?: unknown): void
/** `fn(value)` whenever the notebook sends a value under `name` (`shop.send`). */
export function on<T = unknown>(name: string, fn: (value: T) => void): () => void
export function latest<T = unknown>(name: string): T | undefined
export function getState<T = unknown>(key: string): T | undefined
export function setState(key: string, value: unknown): void
export function onState<T = unknown>(key: string, fn: (value: T) => void): () => void
export function connection(): Connection
export function onConnection(fn: (connection: Connection) => void): () => void

/** The last value the notebook sent under `name`, `initial` before any. */
export function useNotebook<T = unknown>(name: string): T | undefined
export function useNotebook<T>(name: string, initial: T): T
/** A value shared with the notebook (`shop.state[key]`). */
export function useNotebookState<T>(key: string, initial: T): [T, (value: T) => void]
export function useNotebookState<T = unknown>(
  key: string,
): [T | undefined, (value: T) => void]
export function useConnection(): Connection
