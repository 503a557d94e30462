import { describe, expect, it } from 'vitest';

import {
  DEVICE_PRESETS,
  appsToPick,
  viteUpgradeOffered,
  ProjectInfo,
  ReactBoxAPI,
  EditResult,
  ReactBoxError,
  editCost,
  editStage,
  errorMessage,
  lastLines,
  projectNameFromFile,
  selectionFromMessage,
  selectionLabel,
  modeLine,
  statusLine
} from '../src/api';
import { ProjectsModel } from '../src/model';

function info(id: string, status = 'running', extra: Partial<ProjectInfo> = {}): ProjectInfo {
  return {
    id,
    name: id,
    framework: 'vite',
    package_manager: 'npm',
    created: 0,
    member: '',
    status,
    error: null,
    detail: null,
    progress: null,
    restarts: 0,
    preview_url: status === 'running' ? `/base/reactbox/preview/${id}/tok/` : null,
    errors: [],
    selection: null,
    notes: [],
    queue: null,
    backend: 'docker',
    sandboxed: true,
    isolation: 'a hardened container per preview',
    preview_mode: { mode: 'path', why: 'a server reached from elsewhere' },
    ...extra
  };
}

/** A fetcher that records requests and answers from a script. */
function scripted(...answers: Response[]) {
  const calls: { url: string; init: RequestInit }[] = [];
  const fetcher = async (url: string, init: RequestInit) => {
    calls.push({ url, init });
    const answer = answers.shift();
    if (!answer) {
      throw new TypeError('Failed to fetch');
    }
    return answer;
  };
  return { calls, fetcher };
}

const json = (data: unknown, status = 200) =>
  new Response(JSON.stringify(data), { status, headers: { 'Content-Type': 'application/json' } });

describe('ReactBoxAPI', () => {
  it('builds URLs under the base URL, encoding each part', () => {
    const api = new ReactBoxAPI('/a%40b/', scripted().fetcher);
    expect(api.url('projects', 'shop', 'logs')).toBe('/a%40b/reactbox/api/projects/shop/logs');
    expect(api.url('projects', 'a/b')).toBe('/a%40b/reactbox/api/projects/a%2Fb');
    expect(new ReactBoxAPI('/user/x', scripted().fetcher).eventsUrl('shop')).toBe(
      '/user/x/reactbox/api/projects/shop/events'
    );
  });

  it('lists projects and sends actions with their method', async () => {
    const { calls, fetcher } = scripted(json({ projects: [info('shop')] }), json(info('shop', 'stopped'), 202));
    const api = new ReactBoxAPI('/', fetcher);
    expect((await api.list()).map(p => p.id)).toEqual(['shop']);
    expect((await api.action('shop', 'stop')).status).toBe('stopped');
    expect(calls.map(c => [c.init.method, c.url])).toEqual([
      ['GET', '/reactbox/api/projects'],
      ['POST', '/reactbox/api/projects/shop/stop']
    ]);
  });

  it('waits out a busy server (429 with Retry-After), then sends the same request again', async () => {
    const busy = () =>
      new Response(JSON.stringify({ message: '12 are already waiting to start', reason: null }), {
        status: 429,
        headers: { 'Content-Type': 'application/json', 'Retry-After': '3' }
      });
    const { calls, fetcher } = scripted(busy(), busy(), json(info('shop', 'starting'), 202));
    const slept: number[] = [];
    const api = new ReactBoxAPI('/', fetcher, async ms => {
      slept.push(ms);
    });
    expect((await api.action('shop', 'start')).status).toBe('starting');
    expect(slept).toEqual([3000, 3000]);
    expect(calls.map(c => c.url)).toEqual(Array(3).fill('/reactbox/api/projects/shop/start'));

    // A 429 without Retry-After (a cap, not a line) is an error at once.
    const capped = scripted(json({ message: 'All 10 previews are in use', reason: null }, 429));
    const refused = new ReactBoxAPI('/', capped.fetcher, async () => {
      throw new Error('must not wait');
    });
    await expect(refused.action('shop', 'start')).rejects.toThrow('All 10 previews are in use');
  });

  it('says a project waits in line, and where', () => {
    const queued = info('shop', 'installing', {
      queue: { kind: 'install', position: 3, waiting: 12 },
      detail: 'waiting to install its dependencies: 3rd of 12 in line'
    });
    expect(statusLine(queued)).toBe(
      'shop: queued (3 of 12 in line) — waiting to install its dependencies: 3rd of 12 in line'
    );
    expect(editStage({ stage: 'queued', position: 2, waiting: 5 })).toBe(
      'Waiting for a turn: 2 of 5 in line…'
    );
  });

  it('uploads a ZIP as a multipart form with the name', async () => {
    const { calls, fetcher } = scripted(json(info('shop', 'installing'), 201));
    const api = new ReactBoxAPI('/', fetcher);
    await api.upload(new Blob(['PK']), 'shop');
    const body = calls[0].init.body as FormData;
    expect(body.get('name')).toBe('shop');
    expect((body.get('file') as File).name).toBe('shop.zip');
  });

  it('uploads again with the app picked among several', async () => {
    const several =
      'The ZIP holds several apps. Pick one with ?path=<folder>. Apps: apps/admin, apps/web.';
    const { calls, fetcher } = scripted(
      json({ message: several, reason: null }, 422),
      json(info('acme', 'installing', { member: 'apps/web' }), 201)
    );
    const api = new ReactBoxAPI('/', fetcher);
    const error = await api.upload(new Blob(['PK']), 'acme').catch((e: unknown) => e);
    expect(appsToPick(error)).toEqual(['apps/admin', 'apps/web']);
    expect(appsToPick(new ReactBoxError('The ZIP is empty. (HTTP 400)', 400))).toEqual([]);
    expect((await api.upload(new Blob(['PK']), 'acme', 'apps/web')).member).toBe('apps/web');
    expect(calls[1].url).toBe('/reactbox/api/projects?path=apps%2Fweb');
  });

  it('offers the Vite upgrade the server names, and asks for it', async () => {
    const refused =
      'Vite ^4.3.9 is no longer maintained ..., or upload it again with ?upgrade=vite to ' +
      'have that done as one change you can undo, or ask your admin to set ' +
      'c.ReactBoxApp.allow_vulnerable_vite = True.';
    const { calls, fetcher } = scripted(
      json({ message: refused, reason: null }, 422),
      json(info('old', 'installing'), 201)
    );
    const api = new ReactBoxAPI('/', fetcher);
    const error = await api.upload(new Blob(['PK']), 'old').catch((e: unknown) => e);
    expect(viteUpgradeOffered(error)).toBe(true);
    expect(appsToPick(error)).toEqual([]);
    expect(viteUpgradeOffered(new ReactBoxError('No project. (HTTP 404)', 404))).toBe(false);
    await api.upload(new Blob(['PK']), 'old', undefined, true);
    expect(calls[1].url).toBe('/reactbox/api/projects?upgrade=vite');
  });

  it('sends an edit as JSON, paths only when given', async () => {
    const result = { id: 'e1', status: 'applied', message: 'ok', files: [], diff: '', attempts: 1 };
    const { calls, fetcher } = scripted(json(result), json(result));
    const api = new ReactBoxAPI('/', fetcher);
    await api.edit('shop', 'Make it blue');
    await api.edit('shop', 'Make it blue', { paths: ['src/App.jsx'] });
    expect(JSON.parse(calls[0].init.body as string)).toEqual({ instruction: 'Make it blue', paths: null });
    expect(JSON.parse(calls[1].init.body as string).paths).toEqual(['src/App.jsx']);
  });

  it('sends the picked element, the screenshot wish and images only when there are some', async () => {
    const result = { id: 'e1', status: 'applied', message: 'ok', files: [], diff: '', attempts: 1 };
    const { calls, fetcher } = scripted(json(result), json(result));
    const api = new ReactBoxAPI('/', fetcher);
    const at = { file: 'src/App.jsx', line: 3, column: 5, tag: 'h1', text: 'Hi', classes: '' };
    await api.edit('shop', 'Bigger', { at, screenshot: true, images: ['data:image/png;base64,iVBO'] });
    await api.edit('shop', 'Bigger', { at: null, screenshot: false, images: [] });
    expect(JSON.parse(calls[0].init.body as string)).toEqual({
      instruction: 'Bigger',
      paths: null,
      at,
      screenshot: true,
      images: ['data:image/png;base64,iVBO']
    });
    expect(JSON.parse(calls[1].init.body as string)).toEqual({ instruction: 'Bigger', paths: null });
  });

  it('keeps a pick on the server, and accepts or discards the proposal reviewed', async () => {
    const result = { id: 'e1', status: 'applied', message: 'ok', files: [], diff: '', attempts: 1 };
    const at = { file: 'src/App.jsx', line: 3, column: 5, tag: 'h1', text: 'Hi', classes: '' };
    const { calls, fetcher } = scripted(json(at), json(result), json(result));
    const api = new ReactBoxAPI('/base/', fetcher);
    await api.select('shop', at);
    await api.accept('shop', 'e1');
    await api.discard('shop', 'e2');
    expect(calls.map(c => [c.init.method, c.url])).toEqual([
      ['PUT', '/base/reactbox/api/projects/shop/selection'],
      ['POST', '/base/reactbox/api/projects/shop/proposal'],
      ['DELETE', '/base/reactbox/api/projects/shop/proposal?id=e2']
    ]);
    expect(JSON.parse(calls[0].init.body as string)).toEqual(at);
    expect(JSON.parse(calls[1].init.body as string)).toEqual({ id: 'e1' });
  });

  it("turns error responses into the server's one-line message", async () => {
    const { fetcher } = scripted(
      json({ message: 'No project \'nope\'.', reason: null }, 404),
      new Response('plain\n  text', { status: 502, statusText: 'Bad Gateway' }),
      new Response(null, { status: 204 })
    );
    const api = new ReactBoxAPI('/', fetcher);
    await expect(api.get('nope')).rejects.toEqual(new ReactBoxError("No project 'nope'. (HTTP 404)", 404));
    await expect(api.get('x')).rejects.toThrow('plain text (HTTP 502)');
    await expect(api.remove('x')).resolves.toBeUndefined();
    await expect(api.list()).rejects.toThrow('The Jupyter server is not answering');
  });

  it('reads an empty error body as the status text', async () => {
    expect(await errorMessage(new Response('', { status: 503, statusText: 'Service Unavailable' }))).toBe(
      'Service Unavailable (HTTP 503)'
    );
  });
});

describe('helpers', () => {
  it('makes project names from file names', () => {
    expect(projectNameFromFile('My Shop (1).zip')).toBe('my-shop-1');
    expect(projectNameFromFile('shop.ZIP')).toBe('shop');
    expect(projectNameFromFile('???.zip')).toBe('');
    expect(projectNameFromFile('x'.repeat(60) + '.zip')).toHaveLength(40);
  });

  it('says where the preview is served', () => {
    expect(modeLine(info('shop'))).toBe("Sandboxed under Jupyter's path");
    const own = {
      preview_url: 'http://shop.localhost:8888/__reactbox/enter/tok',
      preview_mode: { mode: 'separate' as const, why: 'a local server' }
    };
    expect(modeLine(info('shop', 'running', own))).toBe('Own origin: shop.localhost:8888');
  });

  it('says the state in one line', () => {
    expect(statusLine(info('shop'))).toBe('shop: running');
    expect(statusLine(info('shop', 'installing', { progress: { done: 3, total: 10 } }))).toBe(
      'shop: installing (3/10 packages)'
    );
    expect(statusLine(info('shop', 'failed', { error: 'npm ci failed', detail: 'x' }))).toBe(
      'shop: failed — npm ci failed'
    );
    expect(statusLine(info('shop', 'stopped', { detail: 'idle for 600 s' }))).toBe(
      'shop: stopped — idle for 600 s'
    );
    const bare = { sandboxed: false, isolation: 'NOT SANDBOXED: no bubblewrap' };
    expect(statusLine(info('shop', 'running', bare))).toBe(
      'shop: running ⚠ NOT SANDBOXED: no bubblewrap'
    );
  });

  it('keeps the last log lines', () => {
    expect(lastLines('a\n\nb\nc\n', 2)).toBe('b\nc');
  });

  it('offers desktop, tablet and phone widths', () => {
    expect(DEVICE_PRESETS.map(p => p.width)).toEqual([null, 768, 375]);
  });
});

describe('ProjectsModel', () => {
  it('sorts, and signals only real changes', () => {
    const model = new ProjectsModel(new ReactBoxAPI('/', scripted().fetcher));
    let changes = 0;
    model.changed.connect(() => changes++);
    model.set([info('b'), info('a')]);
    model.set([info('a'), info('b')]);
    expect(model.projects.map(p => p.id)).toEqual(['a', 'b']);
    expect(changes).toBe(1);
    model.upsert(info('a', 'stopped'));
    expect(model.get('a')?.status).toBe('stopped');
    model.drop('b');
    expect(model.projects.map(p => p.id)).toEqual(['a']);
    expect(changes).toBe(3);
  });

  it('keeps the error of a failed action and refreshes after it', async () => {
    const { calls, fetcher } = scripted(
      json({ message: 'Too many previews are running.' }, 429),
      json({ projects: [info('shop', 'stopped')] })
    );
    const model = new ProjectsModel(new ReactBoxAPI('/', fetcher));
    const result = await model.run(() => model.api.action('shop', 'start'));
    expect(result).toBeUndefined();
    expect(model.error).toBe('Too many previews are running. (HTTP 429)');
    expect(model.projects.map(p => p.status)).toEqual(['stopped']);
    expect(calls.map(c => c.url)).toEqual(['/reactbox/api/projects/shop/start', '/reactbox/api/projects']);
  });

  it('polls only while active, faster while something installs', async () => {
    const { calls, fetcher } = scripted(json({ projects: [info('shop', 'installing')] }));
    const model = new ProjectsModel(new ReactBoxAPI('/', fetcher), 50);
    model.active = true;
    await new Promise(r => setTimeout(r, 10));
    expect(model.busy).toBe(true);
    model.active = false;
    await new Promise(r => setTimeout(r, 100));
    expect(calls).toHaveLength(1);
    model.dispose();
  });
});

describe('an edit as people read it', () => {
  const result = (usage: EditResult['usage']): EditResult => ({
    id: 'e1',
    status: 'applied',
    message: 'Changed src/App.jsx.',
    files: ['src/App.jsx'],
    diff: '',
    attempts: 1,
    usage
  });

  it('says what each step is, which try, and the tokens so far', () => {
    expect(editStage({ stage: 'asking', attempt: 1 })).toBe('Asking the model…');
    expect(editStage({ stage: 'compiling', attempt: 2, tokens: 1240 })).toBe(
      'Checking that it compiles (attempt 2)… (1,240 tokens so far)'
    );
  });

  it('reports the tokens used, and the day against a cap when there is one', () => {
    expect(editCost(result({ total_tokens: 120, spent_today: 120, daily_limit: null }))).toBe(
      '120 tokens'
    );
    expect(editCost(result({ total_tokens: 1240, spent_today: 3100, daily_limit: 50000 }))).toBe(
      '1,240 tokens (today 3,100 of 50,000)'
    );
  });
});

describe('an element picked in the preview', () => {
  const picked = {
    reactbox: 'selected',
    at: 'src/components/Card.tsx:42:9',
    tag: 'button',
    text: 'Add to cart',
    classes: 'btn primary'
  };

  it('reads where it was written and what it is', () => {
    expect(selectionFromMessage(picked)).toEqual({
      file: 'src/components/Card.tsx',
      line: 42,
      column: 9,
      tag: 'button',
      text: 'Add to cart',
      classes: 'btn primary'
    });
    expect(selectionLabel(selectionFromMessage(picked)!)).toBe(
      '<button.btn.primary> “Add to cart” (src/components/Card.tsx:42)'
    );
  });

  it('ignores other messages, and caps what the page can say', () => {
    expect(selectionFromMessage({ reactbox: 'select', on: false })).toBeNull();
    expect(selectionFromMessage({ ...picked, at: 'src/App.jsx' })).toBeNull();
    expect(selectionFromMessage('selected')).toBeNull();
    expect(selectionFromMessage(null)).toBeNull();
    const long = selectionFromMessage({ ...picked, text: 'x'.repeat(5000), tag: 7 })!;
    expect(long.text).toHaveLength(120);
    expect(long.tag).toBe('');
  });
});
