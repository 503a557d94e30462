/**
 * The ReactBox drive: every project is a folder of JupyterLab's file browser, and
 * its files open in Lab's own editor.  Everything goes through the files API
 * (`reactbox/api/projects/<id>/files/...`), so it is the same under the
 * JupyterHub service, where the files are not on the user's server, and every
 * save is checked (syntax), committed (Undo, the timeline) and hot-reloaded.
 *
 * A drive path is `<project>/<path in the project>`; the project's dependencies
 * and history are never listed (the server leaves them out).  Lab asks a file's
 * `last_modified` before it saves and offers "overwrite or revert" when the file
 * changed meanwhile (an AI edit, an undo, another tab); the save itself carries
 * the version the drive last loaded or saved (`If-Match`), so a change Lab's check
 * missed is a 409, never lost, and saving again overwrites.
 */
import { Contents, ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { ReactBoxAPI, ReactBoxError } from './api';

export const DRIVE_NAME = 'ReactBox';

/** A drive path as (project, path in it): 'shop/src/App.jsx' -> ['shop', 'src/App.jsx']. */
export function splitPath(path: string): { project: string; file: string } {
  const clean = path
    .split('/')
    .filter(part => part && part !== '.')
    .join('/');
  const at = clean.indexOf('/');
  return at < 0
    ? { project: clean, file: '' }
    : { project: clean.slice(0, at), file: clean.slice(at + 1) };
}

/** The path's parts, for the API's URL (each encoded on its own). */
export function fileParts(file: string): string[] {
  return file ? file.split('/') : [];
}

/** The name a new file or folder gets in `dir`: untitled.jsx, untitled1.jsx, ... */
export function untitledName(taken: Set<string>, ext: string, folder: boolean): string {
  const suffix = folder ? '' : ext ? (ext.startsWith('.') ? ext : `.${ext}`) : '.txt';
  const stem = folder ? 'Untitled Folder' : 'untitled';
  for (let i = 0; ; i++) {
    const name = `${stem}${i ? (folder ? ` ${i}` : i) : ''}${suffix}`;
    if (!taken.has(name)) {
      return name;
    }
  }
}

interface Entry {
  path: string;
  type: 'file' | 'directory';
  size: number;
  mtime: number;
  version?: string;
}

const iso = (seconds: number) => new Date(seconds * 1000).toISOString();

/** Decode base64 (what Lab's uploader sends) to bytes. */
function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

export class ReactBoxDrive implements Contents.IDrive {
  readonly name = DRIVE_NAME;
  private readonly _fileChanged = new Signal<this, Contents.IChangedArgs>(this);
  private _disposed = false;
  /** The version of each file as the drive last saw it: what a save expects. */
  readonly versions = new Map<string, string>();
  /** Files whose last save was refused as stale: the next save overwrites. */
  private readonly refused = new Set<string>();

  constructor(
    private readonly api: ReactBoxAPI,
    readonly serverSettings: ServerConnection.ISettings
  ) {}

  get fileChanged(): ISignal<this, Contents.IChangedArgs> {
    return this._fileChanged;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
    Signal.clearData(this);
  }

  async get(path: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    const { project, file } = splitPath(path);
    if (!project) {
      const projects = await this.api.list();
      const content = projects.map(p =>
        this.model({ path: p.id, type: 'directory', size: 0, mtime: p.created }, null)
      );
      return this.directory('', 0, content);
    }
    if (!file) {
      return this.listing(project, '', options?.content !== false);
    }
    const stat = await this.stat(project, file);
    if (stat.type === 'directory') {
      return this.listing(project, file, options?.content !== false);
    }
    const key = `${project}/${file}`;
    if (options?.content === false) {
      return this.model({ ...stat, path: key }, null);
    }
    const response = await this.api.send('GET', ['projects', project, 'files', ...fileParts(file)]);
    const text = await response.text();
    const version = (response.headers.get('ETag') || '').replace(/"/g, '');
    if (version) {
      this.versions.set(key, version);
    }
    return this.model({ ...stat, path: key }, text);
  }

  /** A file's or folder's type, size, last change and (a file's) version. */
  private stat(project: string, file: string): Promise<Entry> {
    return this.api.request('GET', ['projects', project, 'files', ...fileParts(file)], {}, { stat: '1' });
  }

  private async listing(project: string, dir: string, content: boolean): Promise<Contents.IModel> {
    const path = dir ? `${project}/${dir}` : project;
    if (!content) {
      return this.directory(path, 0, null);
    }
    const { entries } = await this.api.request<{ entries: Entry[] }>(
      'GET',
      ['projects', project, 'files'],
      {},
      { detail: '1' }
    );
    const prefix = dir ? `${dir}/` : '';
    const children = entries
      .filter(e => e.path.startsWith(prefix) && !e.path.slice(prefix.length).includes('/'))
      .map(e => this.model({ ...e, path: `${project}/${e.path}` }, null));
    return this.directory(path, 0, children);
  }

  private directory(path: string, mtime: number, content: Contents.IModel[] | null): Contents.IModel {
    return {
      name: path.split('/').pop() || '',
      path,
      type: 'directory',
      writable: true,
      created: iso(mtime),
      last_modified: iso(mtime),
      mimetype: '',
      content,
      format: content ? 'json' : null
    };
  }

  private model(entry: Entry, text: string | null): Contents.IModel {
    if (entry.type === 'directory') {
      return this.directory(entry.path, entry.mtime, null);
    }
    return {
      name: entry.path.split('/').pop() || '',
      path: entry.path,
      type: 'file',
      writable: true,
      created: iso(entry.mtime),
      last_modified: iso(entry.mtime),
      mimetype: 'text/plain',
      content: text,
      format: text === null ? null : 'text',
      size: entry.size
    };
  }

  async getDownloadUrl(path: string): Promise<string> {
    const { project, file } = splitPath(path);
    return this.api.url('projects', project, 'files', ...fileParts(file));
  }

  async newUntitled(options: Contents.ICreateOptions = {}): Promise<Contents.IModel> {
    const { project, file: dir } = splitPath(options.path || '');
    if (!project) {
      throw new ReactBoxError('New files go in a project: open a project folder first.', 400);
    }
    const folder = options.type === 'directory';
    const listing = await this.listing(project, dir, true);
    const taken = new Set((listing.content as Contents.IModel[]).map(m => m.name));
    const name = untitledName(taken, options.ext || '', folder);
    const path = dir ? `${project}/${dir}/${name}` : `${project}/${name}`;
    const model = folder
      ? await this.save(path, { type: 'directory' })
      : await this.write(path, '', { 'If-None-Match': '*' });
    this._fileChanged.emit({ type: 'new', oldValue: null, newValue: model });
    return model;
  }

  async delete(path: string): Promise<void> {
    const { project, file } = splitPath(path);
    await this.api.request('DELETE', ['projects', project, 'files', ...fileParts(file)]);
    this.versions.delete(path);
    this._fileChanged.emit({ type: 'delete', oldValue: { path }, newValue: null });
  }

  async rename(oldPath: string, newPath: string): Promise<Contents.IModel> {
    const from = splitPath(oldPath);
    const to = splitPath(newPath);
    if (from.project !== to.project || !from.file || !to.file) {
      throw new ReactBoxError('Files move within their project only.', 400);
    }
    await this.api.request('PATCH', ['projects', from.project, 'files', ...fileParts(from.file)], {
      body: JSON.stringify({ path: to.file }),
      headers: { 'Content-Type': 'application/json' }
    });
    this.versions.delete(oldPath);
    const model = await this.get(newPath, { content: false });
    this._fileChanged.emit({ type: 'rename', oldValue: { path: oldPath }, newValue: model });
    return model;
  }

  async save(path: string, options: Partial<Contents.IModel> = {}): Promise<Contents.IModel> {
    const { project, file } = splitPath(path);
    if (!project || !file) {
      throw new ReactBoxError('Save a file inside a project.', 400);
    }
    let model: Contents.IModel;
    if (options.type === 'directory') {
      await this.api.request(
        'PUT',
        ['projects', project, 'files', ...fileParts(file)],
        {},
        { type: 'directory' }
      );
      model = this.directory(path, Date.now() / 1000, null);
    } else if (options.format === 'base64') {
      model = await this.upload(path, fromBase64(String(options.content ?? '')));
    } else {
      const text =
        typeof options.content === 'string' ? options.content : JSON.stringify(options.content);
      model = await this.saveText(path, text);
    }
    this._fileChanged.emit({ type: 'save', oldValue: null, newValue: model });
    return model;
  }

  /** An editor's save: over the version this drive last loaded or saved, so a change
   * made meanwhile (an AI edit, an undo, another tab) is refused (409), never lost.
   * Saving again after a refusal overwrites, as the refusal says. */
  private async saveText(path: string, text: string): Promise<Contents.IModel> {
    let expected = this.versions.get(path);
    if (this.refused.delete(path)) {
      const { project, file } = splitPath(path);
      expected = (await this.stat(project, file)).version;
    }
    try {
      return await this.write(path, text, expected ? { 'If-Match': `"${expected}"` } : {});
    } catch (error) {
      if (error instanceof ReactBoxError && error.status === 409) {
        this.refused.add(path);
      }
      throw error;
    }
  }

  /** Text through the files API, as an editor's save (checked, committed). */
  private async write(path: string, text: string, headers: Record<string, string>) {
    const { project, file } = splitPath(path);
    const r = await this.api.request<{ version: string }>(
      'PUT',
      ['projects', project, 'files', ...fileParts(file)],
      { body: text, headers: { 'Content-Type': 'text/plain; charset=utf-8', ...headers } },
      { from: 'editor' }
    );
    this.versions.set(path, r.version);
    const model = await this.get(path, { content: false });
    return { ...model, content: null };
  }

  /** An uploaded file: text as text (checked), anything else as it is. */
  private async upload(path: string, bytes: Uint8Array): Promise<Contents.IModel> {
    let text: string | null = null;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      text = null;
    }
    if (text !== null) {
      return this.write(path, text, {});
    }
    const { project, file } = splitPath(path);
    await this.api.request('PUT', ['projects', project, 'files', ...fileParts(file)], {
      body: bytes,
      headers: { 'Content-Type': 'application/octet-stream' }
    });
    return this.get(path, { content: false });
  }

  async copy(path: string, toDir: string): Promise<Contents.IModel> {
    const source = await this.get(path);
    const { project, file: dir } = splitPath(toDir);
    const listing = await this.listing(project, dir, true);
    const taken = new Set((listing.content as Contents.IModel[]).map(m => m.name));
    const dot = source.name.lastIndexOf('.');
    const [stem, ext] = dot > 0 ? [source.name.slice(0, dot), source.name.slice(dot)] : [source.name, ''];
    let name = `${stem}-Copy1${ext}`;
    for (let i = 2; taken.has(name); i++) {
      name = `${stem}-Copy${i}${ext}`;
    }
    const target = dir ? `${project}/${dir}/${name}` : `${project}/${name}`;
    const model = await this.write(target, String(source.content ?? ''), { 'If-None-Match': '*' });
    this._fileChanged.emit({ type: 'new', oldValue: null, newValue: model });
    return model;
  }

  // Every save is a change on the project's timeline; Lab's checkpoints are not kept apart.
  async createCheckpoint(): Promise<Contents.ICheckpointModel> {
    return { id: 'timeline', last_modified: new Date().toISOString() };
  }

  async listCheckpoints(): Promise<Contents.ICheckpointModel[]> {
    return [];
  }

  async restoreCheckpoint(): Promise<void> {
    throw new ReactBoxError("Use the project's timeline to go back to an earlier point.", 400);
  }

  async deleteCheckpoint(): Promise<void> {
    return;
  }
}
