import { describe, expect, it } from 'vitest';

import { ReactBoxAPI, ReactBoxError } from '../src/api';
import { ReactBoxDrive, fileParts, splitPath, untitledName } from '../src/drive';

/**
 * A files API in memory, as the server answers it: versions as ETags, a write
 * with a stale If-Match (or If-None-Match: * over an existing file) is a 409.
 */
function server(files: Record<string, string>) {
  const calls: { method: string; url: string; headers: Record<string, string> }[] = [];
  let clock = 1000;
  const mtime: Record<string, number> = Object.fromEntries(Object.keys(files).map(f => [f, clock]));
  const version = (text: string) => `v${text.length}-${text.charCodeAt(0) || 0}`;
  const json = (data: unknown, status = 200) =>
    new Response(JSON.stringify(data), { status, headers: { 'Content-Type': 'application/json' } });
  const fetcher = async (url: string, init: RequestInit) => {
    const headers = (init.headers || {}) as Record<string, string>;
    calls.push({ method: init.method || 'GET', url, headers });
    const parsed = new URL(url, 'http://x');
    const parts = parsed.pathname.split('/').map(decodeURIComponent);
    if (parts[parts.length - 1] === 'projects') {
      return json({ projects: [{ id: 'shop', created: 1 }] });
    }
    const at = parts.indexOf('files');
    const path = parts.slice(at + 1).join('/');
    if (!path) {
      const entries = Object.keys(files).map(p => ({ path: p, type: 'file', size: 1, mtime: mtime[p] }));
      return json({ files: Object.keys(files), entries: [{ path: 'src', type: 'directory', size: 0, mtime: 1 }, ...entries] });
    }
    if (init.method === 'GET' || !init.method) {
      if (!(path in files)) {
        return path === 'src' && parsed.searchParams.get('stat')
          ? json({ path, type: 'directory', size: 0, mtime: 1 })
          : json({ message: 'no file' }, 404);
      }
      if (parsed.searchParams.get('stat')) {
        return json({ path, type: 'file', size: 1, mtime: mtime[path], version: version(files[path]) });
      }
      return new Response(files[path], { headers: { ETag: `"${version(files[path])}"` } });
    }
    if (init.method === 'PUT') {
      const expected = (headers['If-Match'] || '').replace(/"/g, '');
      if ((expected && (!(path in files) || version(files[path]) !== expected)) ||
          (headers['If-None-Match'] === '*' && path in files)) {
        return json({ message: `${path} changed since you opened it` }, 409);
      }
      files[path] = String(init.body);
      mtime[path] = ++clock;
      return json({ path, commit: 'c', version: version(files[path]) });
    }
    if (init.method === 'PATCH') {
      const to = JSON.parse(String(init.body)).path;
      files[to] = files[path];
      mtime[to] = ++clock;
      delete files[path];
      return json({ path: to, commit: 'c' });
    }
    return json({ message: 'unexpected' }, 500);
  };
  return { calls, fetcher, files, edit: (p: string, text: string) => ((files[p] = text), (mtime[p] = ++clock)) };
}

const drive = (fetcher: (url: string, init: RequestInit) => Promise<Response>) =>
  new ReactBoxDrive(new ReactBoxAPI('/a%40b/', fetcher), {} as never);

describe('drive paths', () => {
  it('maps a drive path to its project and the path in it', () => {
    expect(splitPath('shop/src/App.jsx')).toEqual({ project: 'shop', file: 'src/App.jsx' });
    expect(splitPath('/shop/')).toEqual({ project: 'shop', file: '' });
    expect(splitPath('')).toEqual({ project: '', file: '' });
    expect(splitPath('shop/./src//a b.jsx')).toEqual({ project: 'shop', file: 'src/a b.jsx' });
    expect(fileParts('src/App.jsx')).toEqual(['src', 'App.jsx']);
  });

  it('names new files and folders after those there', () => {
    expect(untitledName(new Set(['untitled.jsx']), '.jsx', false)).toBe('untitled1.jsx');
    expect(untitledName(new Set(), 'css', false)).toBe('untitled.css');
    expect(untitledName(new Set(['Untitled Folder']), '', true)).toBe('Untitled Folder 1');
  });

  it('encodes each part of a file path on its own', async () => {
    const s = server({ 'src/a b#.jsx': 'x' });
    await drive(s.fetcher).get('shop/src/a b#.jsx');
    expect(s.calls.at(-1)?.url).toBe('/a%40b/reactbox/api/projects/shop/files/src/a%20b%23.jsx');
  });
});

describe('drive contents', () => {
  it('lists projects as folders and a folder by its own children', async () => {
    const s = server({ 'src/App.jsx': 'app', 'package.json': '{}' });
    const d = drive(s.fetcher);
    const root = await d.get('');
    expect((root.content as { path: string; type: string }[]).map(m => [m.path, m.type])).toEqual([
      ['shop', 'directory']
    ]);
    const top = await d.get('shop');
    expect((top.content as { path: string }[]).map(m => m.path).sort()).toEqual([
      'shop/package.json',
      'shop/src'
    ]);
    const src = await d.get('shop/src');
    expect((src.content as { path: string }[]).map(m => m.path)).toEqual(['shop/src/App.jsx']);
  });

  it('saves with the version it last saw, and a change in between is a 409, not lost', async () => {
    const s = server({ 'src/App.jsx': 'first' });
    const d = drive(s.fetcher);
    const opened = await d.get('shop/src/App.jsx');
    expect(opened.content).toBe('first');
    await d.save('shop/src/App.jsx', { type: 'file', format: 'text', content: 'mine' });
    expect(s.calls.at(-2)?.headers['If-Match']).toBe(`"${'v5-102'}"`);
    expect(s.files['src/App.jsx']).toBe('mine');

    s.edit('src/App.jsx', 'the AI edit'); // meanwhile, elsewhere
    const saving = d.save('shop/src/App.jsx', { type: 'file', format: 'text', content: 'stale' });
    await expect(saving).rejects.toMatchObject({ status: 409 });
    expect(s.files['src/App.jsx']).toBe('the AI edit');

    // Lab sees the newer last change (and offers overwrite or revert); saving again
    // after the refusal overwrites, as the refusal says.
    const onDisk = await d.get('shop/src/App.jsx', { content: false });
    expect(Date.parse(onDisk.last_modified)).toBeGreaterThan(Date.parse(opened.last_modified));
    await d.save('shop/src/App.jsx', { type: 'file', format: 'text', content: 'overwritten' });
    expect(s.files['src/App.jsx']).toBe('overwritten');
    const reverted = await d.get('shop/src/App.jsx');
    expect(reverted.content).toBe('overwritten');
  });

  it('makes new files without overwriting, renames within the project only', async () => {
    const s = server({ 'src/untitled.jsx': '' });
    const d = drive(s.fetcher);
    const made = await d.newUntitled({ path: 'shop/src', type: 'file', ext: '.jsx' });
    expect(made.path).toBe('shop/src/untitled1.jsx');
    expect(s.calls.find(c => c.method === 'PUT')?.headers['If-None-Match']).toBe('*');
    await expect(d.rename('shop/src/untitled1.jsx', 'other/x.jsx')).rejects.toBeInstanceOf(ReactBoxError);
    const moved = await d.rename('shop/src/untitled1.jsx', 'shop/src/Card.jsx');
    expect(moved.path).toBe('shop/src/Card.jsx');
    expect(Object.keys(s.files).sort()).toEqual(['src/Card.jsx', 'src/untitled.jsx']);
  });
});
