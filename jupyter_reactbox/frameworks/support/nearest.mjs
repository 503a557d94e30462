// The nearest `relative` path (inside node_modules) from `dir` up the tree, or
// null: a workspace hoists its members' dependencies to its top.  Shared by the
// launchers that run in the sandbox.
import fs from 'node:fs'
import path from 'node:path'

export function nearest(relative, dir = process.cwd()) {
  for (;;) {
    const candidate = path.join(dir, relative)
    if (fs.existsSync(candidate)) return candidate
    if (dir === path.dirname(dir)) return null
    dir = path.dirname(dir)
  }
}
