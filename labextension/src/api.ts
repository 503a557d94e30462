/**
 * The jupyter-reactbox REST API (`{base_url}reactbox/api/`), as JupyterLab
 * calls it: through `ServerConnection`, so the page's own login (cookie and
 * XSRF token, or the hub's) is the credential.  Nothing here knows the DOM.
 */

// The server's JSON, typed once in jupyter_reactbox/schema.py (schema.ts is generated).
export * from './schema';
import { EDIT_STAGES } from './schema';
import type { EditEvent, EditResult, ProjectInfo, Selection, ShareInfo } from './schema';

/** What goes with an instruction besides its words. */
export interface EditOptions {
  /** Files to focus on (else the server picks them). */
  paths?: string[];
  /** The element the instruction is about (picked in the preview's select mode). */
  at?: Selection | null;
  /** Show the model the page as it is now (a model that takes images only). */
  screenshot?: boolean;
  /** Images to show the model, as data URLs (a sketch, a mock-up). */
  images?: string[];
  /** Propose the change (status `proposed`, with its diff) and write nothing yet. */
  review?: boolean;
}

/**
 * The preview's answer to a click in select mode (static/select.js posts
 * `{reactbox: 'selected', at: 'src/App.jsx:42:9', tag, text, classes}`), or null
 * for any other message.  The page's own scripts can post too: what this returns
 * is only ever shown to the user and sent with their next instruction.
 */
export function selectionFromMessage(data: unknown): Selection | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const m = data as Record<string, unknown>;
  const at = typeof m.at === 'string' ? /^(.+?):(\d+):(\d+)$/.exec(m.at) : null;
  if (m.reactbox !== 'selected' || !at) {
    return null;
  }
  const text = (value: unknown, max: number) => (typeof value === 'string' ? value.slice(0, max) : '');
  return {
    file: at[1],
    line: Number(at[2]),
    column: Number(at[3]),
    tag: text(m.tag, 64),
    text: text(m.text, 120),
    classes: text(m.classes, 200)
  };
}

/** A selection as people read it: `<button.counter> “Count is 0” (src/App.jsx:24)`. */
export function selectionLabel(s: Selection): string {
  const classes = s.classes ? '.' + s.classes.split(/\s+/).join('.') : '';
  const text = s.text ? ` “${s.text.length > 40 ? s.text.slice(0, 39) + '…' : s.text}”` : '';
  return `<${s.tag}${classes}>${text} (${s.file}:${s.line})`;
}

/** A running edit's step as people read it: "Checking that it compiles (attempt 2)…". */
export function editStage(event: EditEvent): string {
  if (event.stage === 'queued' && event.position) {
    return `Waiting for a turn: ${event.position} of ${event.waiting} in line…`;
  }
  const attempt = (event.attempt ?? 1) > 1 ? ` (attempt ${event.attempt})` : '';
  const spent = event.tokens ? ` (${event.tokens.toLocaleString('en')} tokens so far)` : '';
  if (event.stage === 'step') {
    return `Step ${event.step}: ${event.message ?? ''}…${spent}`;
  }
  return `${EDIT_STAGES[event.stage] ?? event.stage}${attempt}…${spent}`;
}

/** What an edit used, as people read it: "1,240 tokens (today 3,100 of 50,000)". */
export function editCost(result: EditResult): string {
  const { total_tokens, spent_today, daily_limit } = result.usage ?? { total_tokens: 0 };
  let text = `${(total_tokens ?? 0).toLocaleString('en')} tokens`;
  if (daily_limit && spent_today !== undefined) {
    text += ` (today ${spent_today.toLocaleString('en')} of ${daily_limit.toLocaleString('en')})`;
  }
  return text;
}

/** One change on a project's timeline (history.py's ``timeline``). */
export interface Change {
  sha: string;
  message: string;
  time: number;
  /** upload, ai-edit, editor-save, hand-edit, file-upload, restore, outside, upgrade, change */
  kind: string;
  /** An AI edit's instruction, a file's path. */
  detail: string;
  files: string[];
  points: string[];
}

export interface Point {
  name: string;
  sha: string;
  time: number;
}

/** A change as one line: "AI edit: Make it blue", "Saved in the editor: src/App.jsx". */
export function changeLabel(change: Change): string {
  const kinds: Record<string, string> = {
    upload: 'Uploaded',
    'ai-edit': 'AI edit',
    'editor-save': 'Saved in the editor',
    'hand-edit': 'Changed by hand',
    'file-upload': 'File uploaded',
    restore: 'Restored to',
    outside: 'Changed outside',
    upgrade: 'Upgraded'
  };
  const what = kinds[change.kind] || change.message;
  return change.detail && kinds[change.kind] ? `${what}: ${change.detail}` : what;
}

/** An API error with the server's own one-line message and its status. */
export class ReactBoxError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'ReactBoxError';
  }
}

/** How long a call waits out a busy server (429 with a Retry-After) in all. */
export const BUSY_WAIT_MS = 600_000;

/** Milliseconds a 429 asks to wait before the same request again (null: not that). */
export function retryAfter(response: Response): number | null {
  const seconds = Number(response.headers.get('Retry-After') ?? NaN);
  if (response.status !== 429 || !Number.isFinite(seconds)) {
    return null;
  }
  return Math.min(Math.max(seconds, 0.5), 60) * 1000;
}

/** How a request goes out: JupyterLab's `ServerConnection.makeRequest`, or a test's. */
export type Fetcher = (url: string, init: RequestInit) => Promise<Response>;

export class ReactBoxAPI {
  /**
   * @param baseUrl the Jupyter server's base URL (ends with '/')
   * @param fetcher sends one request with the page's credentials
   * @param sleep waits that many milliseconds (a test's answers at once)
   */
  constructor(
    readonly baseUrl: string,
    private readonly fetcher: Fetcher,
    private readonly sleep: (ms: number) => Promise<void> = ms =>
      new Promise(resolve => setTimeout(resolve, ms))
  ) {}

  /** The absolute URL of an API path. */
  url(...parts: string[]): string {
    const base = this.baseUrl.endsWith('/') ? this.baseUrl : this.baseUrl + '/';
    return base + ['reactbox', 'api', ...parts.map(encodeURIComponent)].join('/');
  }

  /**
   * One request; its response if it is 2xx, else a ReactBoxError with the server's message.
   * A 429 with a Retry-After (the server's line of installs, starts or edits is full) is
   * waited out and sent again, for BUSY_WAIT_MS at most.
   */
  async send(
    method: string,
    parts: string[],
    init: RequestInit = {},
    query: Record<string, string> = {}
  ): Promise<Response> {
    const search = new URLSearchParams(query).toString();
    const deadline = Date.now() + BUSY_WAIT_MS;
    for (;;) {
      let response: Response;
      try {
        response = await this.fetcher(this.url(...parts) + (search ? `?${search}` : ''), {
          ...init,
          method
        });
      } catch (error) {
        throw new ReactBoxError(`The Jupyter server is not answering (${error}).`, 0);
      }
      if (response.ok) {
        return response;
      }
      const wait = retryAfter(response);
      if (wait === null || Date.now() + wait > deadline) {
        throw new ReactBoxError(await errorMessage(response), response.status);
      }
      await this.sleep(wait);
    }
  }

  async request<T>(
    method: string,
    parts: string[],
    init: RequestInit = {},
    query: Record<string, string> = {}
  ): Promise<T> {
    const response = await this.send(method, parts, init, query);
    if (response.status === 204) {
      return undefined as T;
    }
    const type = response.headers.get('Content-Type') || '';
    return (type.includes('json') ? await response.json() : await response.text()) as T;
  }

  async list(): Promise<ProjectInfo[]> {
    return (await this.request<{ projects: ProjectInfo[] }>('GET', ['projects'])).projects;
  }

  get(id: string): Promise<ProjectInfo> {
    return this.request('GET', ['projects', id]);
  }

  /** Upload a ZIP as project `name`; `path`: the app's folder when it holds several;
   * `upgradeVite`: raise an unmaintained Vite to a maintained one (one undoable change). */
  upload(file: Blob, name: string, path?: string, upgradeVite = false): Promise<ProjectInfo> {
    const body = new FormData();
    body.append('file', file, `${name}.zip`);
    body.append('name', name);
    const query: Record<string, string> = path ? { path } : {};
    if (upgradeVite) {
      query.upgrade = 'vite';
    }
    return this.request('POST', ['projects'], { body }, query);
  }

  action(id: string, action: 'start' | 'stop' | 'restart'): Promise<ProjectInfo> {
    return this.request('POST', ['projects', id, action]);
  }

  remove(id: string): Promise<void> {
    return this.request('DELETE', ['projects', id]);
  }

  logs(id: string): Promise<string> {
    return this.request('GET', ['projects', id, 'logs']);
  }

  /** Ask the AI to fix the error the project's page reported last. */
  fix(id: string): Promise<EditResult> {
    return this.request('POST', ['projects', id, 'edits'], {
      body: JSON.stringify({ fix: true }),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** Ask the AI to change the app (see `EditOptions`). */
  edit(id: string, instruction: string, options: EditOptions = {}): Promise<EditResult> {
    const { paths, at, screenshot, images, review } = options;
    const body: Record<string, unknown> = { instruction, paths: paths && paths.length ? paths : null };
    if (at) {
      body.at = at;
    }
    if (screenshot) {
      body.screenshot = true;
    }
    if (images && images.length) {
      body.images = images;
    }
    if (review) {
      body.review = true;
    }
    return this.request('POST', ['projects', id, 'edits'], {
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** Keep the element picked in the preview for the next edit (any client's). */
  select(id: string, selection: Selection): Promise<Selection> {
    return this.request('PUT', ['projects', id, 'selection'], {
      body: JSON.stringify(selection),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** Write the change edit `editId` proposed (the one the user reviewed). */
  accept(id: string, editId: string): Promise<EditResult> {
    return this.request('POST', ['projects', id, 'proposal'], {
      body: JSON.stringify({ id: editId }),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** Drop the change edit `editId` proposed. */
  discard(id: string, editId: string): Promise<EditResult> {
    return this.request('DELETE', ['projects', id, 'proposal'], {}, { id: editId });
  }

  async undo(id: string): Promise<string> {
    const r = await this.request<{ head: { message: string } }>('POST', ['projects', id, 'undo']);
    return r.head.message;
  }

  async diff(id: string, from = 'HEAD~1', to?: string): Promise<string> {
    const query: Record<string, string> = to ? { from, to } : { from };
    return (await this.request<{ diff: string }>('GET', ['projects', id, 'diff'], {}, query)).diff;
  }

  /** The project's changes, newest first, and its named points. */
  history(id: string): Promise<{ commits: Change[]; points: Point[] }> {
    return this.request('GET', ['projects', id, 'history']);
  }

  /** The app as it was at `to` (a sha or a point's name), as one new change. */
  async restore(id: string, to: string): Promise<string> {
    const r = await this.request<{ head: { message: string } }>('POST', ['projects', id, 'restore'], {
      body: JSON.stringify({ to }),
      headers: { 'Content-Type': 'application/json' }
    });
    return r.head.message;
  }

  namePoint(id: string, name: string, at: string): Promise<Point> {
    return this.request('PUT', ['projects', id, 'points', name], {
      body: JSON.stringify({ at }),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /** Build the app for a link of its own and publish it there (`days`: how long). */
  share(id: string, days?: number): Promise<ShareInfo> {
    return this.request('POST', ['projects', id, 'shares'], {
      body: JSON.stringify(days === undefined ? {} : { days }),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  getShare(shareId: string): Promise<ShareInfo> {
    return this.request('GET', ['shares', shareId]);
  }

  /** The share link is dead at once. */
  revoke(shareId: string): Promise<void> {
    return this.request('DELETE', ['shares', shareId]);
  }

  /** The URL of the project's running edit's steps (server-sent events). */
  editEventsUrl(id: string): string {
    return this.url('projects', id, 'edits', 'events');
  }

  /** The URL of the project's server-sent events (same-origin GET: the login cookie). */
  eventsUrl(id: string): string {
    return this.url('projects', id, 'events');
  }
}

/** The server's message for an error response, on one line. */
export async function errorMessage(response: Response): Promise<string> {
  let text = '';
  try {
    const raw = await response.text();
    try {
      const data = JSON.parse(raw);
      text = data.message || data.reason || '';
    } catch {
      text = raw;
    }
  } catch {
    text = '';
  }
  text = text.replace(/\s+/g, ' ').trim() || response.statusText || 'Request failed';
  return `${text} (HTTP ${response.status})`;
}

/** The apps an upload refused for holding several lists ("... Apps: apps/web, docs."),
 * to pick one of; [] for any other error. */
export function appsToPick(error: unknown): string[] {
  if (!(error instanceof ReactBoxError) || error.status !== 422) {
    return [];
  }
  const found = /several apps\. Pick one with \?path=<folder>\. Apps: (.*?)\.(?: \(HTTP|$)/.exec(
    error.message
  );
  return found ? found[1].split(', ').filter(Boolean) : [];
}

/** Whether an upload was refused for a Vite the server can upgrade on request. */
export function viteUpgradeOffered(error: unknown): boolean {
  return error instanceof ReactBoxError && error.status === 422 && error.message.includes('?upgrade=vite');
}

/** A project name from an uploaded file's name: "My Shop (1).zip" -> "my-shop-1". */
export function projectNameFromFile(filename: string): string {
  const stem = filename.replace(/\.zip$/i, '');
  return stem
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/g, '');
}

/** One line for a status bar. */
export function statusLine(info: ProjectInfo): string {
  let line = `${info.id}: ${info.queue ? 'queued' : info.status}`;
  if (info.queue) {
    line += ` (${info.queue.position} of ${info.queue.waiting} in line)`;
  } else if (info.status === 'installing' && info.progress && info.progress.total > 0) {
    line += ` (${info.progress.done}/${info.progress.total} packages)`;
  }
  const why = info.status === 'failed' ? info.error : info.detail;
  if (why) {
    line += ` — ${why}`;
  }
  if (info.sandboxed === false) {
    line += ` ⚠ ${info.isolation}`;
  }
  return line;
}

/** Where the preview is served, in a few words (its reason is `preview_mode.why`). */
export function modeLine(info: ProjectInfo): string {
  if (info.preview_mode?.mode !== 'separate') {
    return "Sandboxed under Jupyter's path";
  }
  try {
    return `Own origin: ${new URL(info.preview_url ?? '').host}`;
  } catch {
    return 'Own origin';
  }
}

/** The last `n` non-empty lines of a log, for a failed preview's status. */
export function lastLines(log: string, n = 8): string {
  return log
    .split('\n')
    .filter(line => line.trim())
    .slice(-n)
    .join('\n');
}

export interface DevicePreset {
  label: string;
  width: number | null;
}

/** Widths the preview can be shown at (null: the panel's full width). */
export const DEVICE_PRESETS: DevicePreset[] = [
  { label: 'Desktop', width: null },
  { label: 'Tablet', width: 768 },
  { label: 'Phone', width: 375 }
];
