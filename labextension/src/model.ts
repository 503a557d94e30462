/**
 * The projects the sidebar shows, kept fresh by polling the list while someone
 * looks.  (Polling, not one event stream per project: a browser allows six
 * HTTP/1.1 connections per host, and JupyterLab needs them.)
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ProjectInfo, ReactBoxAPI, ReactBoxError } from './api';

export class ProjectsModel {
  private _projects: ProjectInfo[] = [];
  private _error: string | null = null;
  private _errorFromRefresh = false;
  private _changed = new Signal<this, void>(this);
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _active = false;

  constructor(
    readonly api: ReactBoxAPI,
    readonly interval = 2000
  ) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get projects(): readonly ProjectInfo[] {
    return this._projects;
  }

  /** The last error of a refresh or an action, for the sidebar's message line. */
  get error(): string | null {
    return this._error;
  }

  get(id: string): ProjectInfo | undefined {
    return this._projects.find(p => p.id === id);
  }

  /** Replace the list (sorted by id); `changed` fires only if something differs. */
  set(projects: ProjectInfo[]): void {
    const sorted = [...projects].sort((a, b) => a.id.localeCompare(b.id));
    if (JSON.stringify(sorted) !== JSON.stringify(this._projects)) {
      this._projects = sorted;
      this._changed.emit();
    }
  }

  upsert(info: ProjectInfo): void {
    this.set([...this._projects.filter(p => p.id !== info.id), info]);
  }

  drop(id: string): void {
    this.set(this._projects.filter(p => p.id !== id));
  }

  /** Show an error (null: none).  An action's error stays until the next action;
   * a refresh's until a refresh succeeds. */
  setError(error: unknown, fromRefresh = false): void {
    this._errorFromRefresh = fromRefresh;
    const message =
      error === null
        ? null
        : error instanceof ReactBoxError
          ? error.message
          : String(error);
    if (message !== this._error) {
      this._error = message;
      this._changed.emit();
    }
  }

  async refresh(): Promise<void> {
    try {
      this.set(await this.api.list());
      if (this._errorFromRefresh) {
        this.setError(null);
      }
    } catch (error) {
      this.setError(error, true);
    }
  }

  /** Run an action, show its error in place, and refresh after it. */
  async run<T>(action: () => Promise<T>): Promise<T | undefined> {
    try {
      const result = await action();
      this.setError(null);
      return result;
    } catch (error) {
      this.setError(error);
      return undefined;
    } finally {
      await this.refresh();
    }
  }

  /** Poll while `active` (the sidebar is visible), faster while anything changes state. */
  set active(value: boolean) {
    if (value === this._active) {
      return;
    }
    this._active = value;
    if (value) {
      void this._tick();
    } else if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  get active(): boolean {
    return this._active;
  }

  get busy(): boolean {
    return this._projects.some(p => ['installing', 'starting'].includes(p.status));
  }

  private async _tick(): Promise<void> {
    await this.refresh();
    if (this._active) {
      const wait = this.busy ? this.interval / 2 : this.interval;
      this._timer = setTimeout(() => void this._tick(), wait);
    }
  }

  dispose(): void {
    this.active = false;
    Signal.clearData(this);
  }
}
