/**
 * The ReactBox sidebar: the user's projects with their status, start/stop,
 * open, logs and delete, and an upload button (or drop a ZIP anywhere on it).
 */
import { Dialog, InputDialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { appsToPick, ProjectInfo, projectNameFromFile, viteUpgradeOffered } from './api';
import { ProjectsModel } from './model';

export interface SidebarActions {
  open(id: string): void;
  logs(id: string): void;
}

export class ReactBoxSidebar extends Widget {
  readonly input: HTMLInputElement;
  private readonly list: HTMLUListElement;
  private readonly message: HTMLDivElement;

  constructor(
    readonly model: ProjectsModel,
    private readonly actions: SidebarActions
  ) {
    super();
    this.id = 'reactbox-sidebar';
    this.addClass('jp-ReactBox-sidebar');
    this.title.caption = 'ReactBox: React apps beside your notebooks';

    const header = document.createElement('div');
    header.className = 'jp-ReactBox-sidebar-header';
    const heading = document.createElement('h2');
    heading.textContent = 'ReactBox';
    const upload = button('Upload app…', 'jp-ReactBox-upload', () => this.input.click());
    upload.title = 'Upload a React app as a ZIP (or drop one here)';
    this.input = document.createElement('input');
    this.input.type = 'file';
    this.input.accept = '.zip,application/zip';
    this.input.hidden = true;
    this.input.addEventListener('change', () => {
      const file = this.input.files?.[0];
      this.input.value = '';
      if (file) {
        void this.upload(file);
      }
    });
    header.append(heading, upload, this.input);

    this.message = document.createElement('div');
    this.message.className = 'jp-ReactBox-message';
    this.list = document.createElement('ul');
    this.list.className = 'jp-ReactBox-projects';
    const hint = document.createElement('p');
    hint.className = 'jp-ReactBox-hint';
    hint.textContent = 'Drop a ZIP of a Vite or create-react-app project here.';
    this.node.append(header, this.message, this.list, hint);

    this.node.addEventListener('dragover', event => {
      event.preventDefault();
      this.addClass('jp-mod-dropTarget');
    });
    this.node.addEventListener('dragleave', () => this.removeClass('jp-mod-dropTarget'));
    this.node.addEventListener('drop', event => {
      event.preventDefault();
      this.removeClass('jp-mod-dropTarget');
      const file = event.dataTransfer?.files?.[0];
      if (file) {
        void this.upload(file);
      }
    });
    model.changed.connect(this.render, this);
    this.render();
  }

  /** Upload a ZIP; the project then installs and starts on the server. */
  async upload(file: File): Promise<ProjectInfo | undefined> {
    const name = projectNameFromFile(file.name);
    if (!name) {
      this.model.setError(`Cannot make a project name from ${JSON.stringify(file.name)}.`);
      return undefined;
    }
    this.showMessage(`Uploading ${file.name}…`, false);
    const info = await this.model.run(async () => {
      let path: string | undefined;
      for (;;) {
        try {
          return await this.model.api.upload(file, name, path);
        } catch (error) {
          // A repository of several apps (a monorepo): the user picks one, and it
          // goes again with that choice.
          const apps = appsToPick(error);
          if (apps.length && path === undefined) {
            const choice = await InputDialog.getItem({
              title: `${file.name} holds several apps: which one?`,
              items: apps,
              okLabel: 'Run it'
            });
            if (!choice.button.accept || !choice.value) {
              return undefined;
            }
            path = choice.value;
            continue;
          }
          // A Vite with no patched release: the server can raise it, as one change.
          if (viteUpgradeOffered(error)) {
            const answer = await showDialog({
              title: 'Upgrade Vite?',
              body: (error as Error).message.replace(/ \(HTTP \d+\)$/, ''),
              buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Upgrade and run' })]
            });
            if (!answer.button.accept) {
              return undefined;
            }
            return this.model.api.upload(file, name, path, true);
          }
          throw error;
        }
      }
    });
    if (info) {
      this.showMessage(`Uploaded ${info.id}: it installs and starts now.`, false);
      this.actions.open(info.id);
    } else if (!this.model.error) {
      this.showMessage('Upload cancelled.', false);
    }
    return info;
  }

  private showMessage(text: string, isError: boolean): void {
    this.message.textContent = text;
    this.message.classList.toggle('jp-mod-error', isError);
  }

  protected onAfterShow(): void {
    this.model.active = true;
  }

  protected onAfterHide(): void {
    this.model.active = false;
  }

  protected onAfterAttach(): void {
    this.model.active = this.isVisible;
  }

  private render(): void {
    if (this.model.error) {
      this.showMessage(this.model.error, true);
    } else if (this.message.classList.contains('jp-mod-error')) {
      this.showMessage('', false);
    }
    const rows = this.model.projects.map(info => this.row(info));
    if (!rows.length) {
      const empty = document.createElement('li');
      empty.className = 'jp-ReactBox-empty';
      empty.textContent = 'No projects yet.';
      rows.push(empty);
    }
    this.list.replaceChildren(...rows);
  }

  private row(info: ProjectInfo): HTMLLIElement {
    const li = document.createElement('li');
    li.className = 'jp-ReactBox-project';
    li.dataset.project = info.id;
    li.dataset.status = info.status;
    const name = document.createElement('button');
    name.className = 'jp-ReactBox-name';
    name.textContent = info.id;
    name.title = `Open the preview of ${info.id}`;
    name.addEventListener('click', () => this.actions.open(info.id));
    const status = document.createElement('span');
    status.className = `jp-ReactBox-status jp-ReactBox-status-${info.status}`;
    // Waiting in the server's line: its place, e.g. "queued 3/12".
    status.textContent = info.queue ? `queued ${info.queue.position}/${info.queue.waiting}` : info.status;
    status.title = info.error || info.detail || info.status;
    const api = this.model.api;
    const running = ['installing', 'starting', 'running'].includes(info.status);
    const toggle = running
      ? button('Stop', 'jp-ReactBox-stop', () => this.model.run(() => api.action(info.id, 'stop')))
      : button('Start', 'jp-ReactBox-start', () => this.model.run(() => api.action(info.id, 'start')));
    const logs = button('Logs', 'jp-ReactBox-logs', () => this.actions.logs(info.id));
    const remove = button('Delete', 'jp-ReactBox-delete', () => {
      if (window.confirm(`Delete ${info.id}: its container and its files?`)) {
        void this.model.run(() => api.remove(info.id));
      }
    });
    const controls = document.createElement('span');
    controls.className = 'jp-ReactBox-controls';
    controls.append(toggle, logs, remove);
    li.append(name, status, controls);
    return li;
  }

  dispose(): void {
    this.model.changed.disconnect(this.render, this);
    super.dispose();
  }
}

export function button(label: string, className: string, onClick: () => unknown): HTMLButtonElement {
  const b = document.createElement('button');
  b.className = `jp-Button jp-mod-styled jp-mod-minimal ${className}`;
  b.textContent = label;
  b.addEventListener('click', () => void onClick());
  return b;
}
