// Generated from jupyter_reactbox/schema.py by `python -m jupyter_reactbox.schema`:
// edit that module, not this file (tests/test_state.py checks they agree).

export interface ProjectInfo {
  id: string;
  name: string;
  /** 'vite', 'cra', 'next', or another framework plugin's name. */
  framework: string;
  package_manager: string;
  created: number;
  /** The app's folder in its workspace (a monorepo's ``apps/web``), '' for the top. */
  member: string;
  status: Status;
  /** Why it failed (the first useful line first). */
  error: string | null;
  /** What it is doing, or why it stopped. */
  detail: string | null;
  /** Packages installed so far, during an install. */
  progress: Progress | null;
  restarts: number;
  /** Running, but frozen while nobody uses it; any use wakes it in a moment. */
  frozen: boolean;
  /** The page to load: a path on this server, or a URL on the preview's own origin. */
  preview_url: string | null;
  /** The app's source as a ZIP (a path on this server; the user's login opens it). */
  export_url: string;
  /** Its newest production build this server ran, if any. */
  build: BuildInfo | null;
  /** What the preview page reported since it was last loaded. */
  errors: PageError[];
  /** The element picked in the preview (alt-click, or select mode) for the next edit. */
  selection: Selection | null;
  /** What the server changed to run it (a patched Vite release, ...). */
  notes: string[];
  /** Its place in line while its install or start waits for one (``detail`` says it in words). */
  queue: Queue | null;
  /** Where its dev server runs: 'docker', 'local', ... */
  backend: string;
  /** False: the dev server runs with no sandbox (say so wherever it shows). */
  sandboxed: boolean;
  /** In a line: what isolates the dev server, or why nothing does. */
  isolation: string;
  /** Where its previews are served, and why. */
  preview_mode: PreviewMode;
}

export type Status = 'installing' | 'starting' | 'running' | 'stopped' | 'failed' | 'deleted';

export interface Progress {
  done: number;
  total: number;
}

/** A production build of the app (``builds.py``). */
export interface BuildInfo {
  id: string;
  project: string;
  /** The path it is built to be served under. */
  base: string;
  status: BuildStatus;
  created: number;
  finished: number | null;
  /** Why it failed, its first error line first. */
  error: string | null;
  files: number;
  bytes: number;
  /** The share link it was built for, if any. */
  share: string | null;
}

export type BuildStatus = 'building' | 'ready' | 'failed';

/** What a preview page reported (an uncaught error, a failed module, ...). */
export interface PageError {
  kind: string;
  message: string;
  count: number;
  time: number;
  source?: string;
  stack?: string;
}

/** An element picked in the preview: where it is written, what it looks like. */
export interface Selection {
  file: string;
  line: number;
  column: number;
  tag: string;
  text: string;
  classes: string;
}

/** A place in line (``admission.py``). */
export interface Queue {
  kind: Line;
  /** 1: next. */
  position: number;
  waiting: number;
}

/** The server's lines of work that wait their turn (``admission.py``). */
export type Line = 'install' | 'start' | 'edit';

export interface PreviewMode {
  /** 'separate': the preview at / of an origin of its own; 'path': under Jupyter's path, in a CSP sandbox (an opaque origin). */
  mode: 'separate' | 'path';
  /** In a line: why this mode (a local server, a setting, behind a proxy). */
  why: string;
}

/** A published snapshot at a link that expires (``shares.py``). */
export interface ShareInfo {
  id: string;
  project: string;
  build: string;
  /** Where it is served: a path on this server. */
  url: string;
  created: number;
  expires: number;
  last_access: number | null;
  status: ShareStatus;
  error: string | null;
  /** Under JupyterHub: the hub user whose share it is ('' on a single-user server). */
  owner: string;
  /** Under JupyterHub: the hub users whose login opens its pages. */
  users: string[];
  /** Under JupyterHub: the hub groups whose members' login opens its pages. */
  groups: string[];
  /** Under JupyterHub, if the admin allows: its pages open for anyone with the link. */
  public: boolean;
}

export type ShareStatus = 'building' | 'live' | 'failed' | 'expired';

/** An AI edit: what ``POST .../edits`` answers, and each of ``GET .../edits``. */
export interface EditResult {
  id: string;
  instruction: string;
  paths: string[] | null;
  /** The element or line the instruction is about. */
  at: Selection | null;
  /** Images the model was shown: attached ones, and the screenshot. */
  images: number;
  /** What the user should know that did not stop the edit (an image not sent). */
  notes: string[];
  /** Propose the change (status ``proposed``, with its diff) and write nothing. */
  review: boolean;
  /** Made in steps, with tools (agent mode). */
  agent: boolean;
  status: EditStatus;
  files: string[];
  diff: string;
  message: string;
  attempts: number;
  usage: Usage;
  created: number;
  finished: number | null;
  /** The change it made, where it made one. */
  commit: string | null;
}

/** running; applied (written, one change); failed (nothing changed); rejected (the model's answer could not be used); proposed (a reviewed edit's change, written only once accepted); discarded (a proposal let go). */
export type EditStatus = 'running' | 'applied' | 'failed' | 'rejected' | 'proposed' | 'discarded';

/** Tokens one edit used (every try); with a daily cap, the user's day so far. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  spent_today?: number;
  daily_limit?: number | null;
}

/** One step of a running edit (``GET .../edits/events``). */
export interface EditEvent {
  stage: EditStage;
  time?: number;
  /** Which try at the change (1, 2, ...). */
  attempt?: number;
  /** Tokens spent so far. */
  tokens?: number;
  message?: string;
  /** compiling: the files changed. */
  files?: string[];
  /** checking: the server's own browser looks at the page (no page was open). */
  headless?: boolean;
  /** done: how it ended. */
  status?: EditStatus;
  /** queued: the line it waits in. */
  kind?: Line;
  /** queued: its place in line (1: next). */
  position?: number;
  waiting?: number;
  /** step: an agent's step (1, 2, ...). */
  step?: number;
  /** step: the tool the agent calls (read_file, write_file, check_compile...). */
  tool?: string;
}

export type EditStage = 'queued' | 'looking' | 'asking' | 'step' | 'applying' | 'compiling' | 'checking' | 'done';

/** Each step of an edit as people read it, in the widget, the magics and Lab. */
export const EDIT_STAGES: Record<EditStage, string> = {
  queued: 'Waiting for a turn',
  looking: 'Taking a screenshot of the page',
  asking: 'Asking the model',
  step: 'The agent works',
  applying: 'Checking and applying the answer',
  compiling: 'Checking that it compiles',
  checking: 'Watching the page for errors',
  done: 'Done',
};
