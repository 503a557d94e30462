/**
 * jupyter-reactbox in JupyterLab: a ReactBox sidebar, preview panels that open
 * beside the notebook, a launcher card, command palette entries, and the
 * renderer through which `%reactbox open NAME` in a kernel opens a panel.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { ReactBoxAPI, selectionFromMessage } from './api';
import { DRIVE_NAME, ReactBoxDrive } from './drive';
import { ProjectsModel } from './model';
import { PreviewPanel } from './panel';
import { ReactBoxSidebar } from './sidebar';

/** What `%reactbox open NAME` displays; only a fresh one opens a panel. */
export const OPEN_MIME = 'application/vnd.jupyter.reactbox.open+json';
const FRESH_MS = 5 * 60_000; // the kernel's clock may differ from the browser's a little

export namespace CommandIDs {
  export const upload = 'reactbox:upload';
  export const open = 'reactbox:open-preview';
  export const sidebar = 'reactbox:show-sidebar';
}

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <rect class="jp-icon3" fill="#616161" x="2.5" y="3.5" width="19" height="17" rx="2" fill-opacity="0"
        stroke="#616161" stroke-width="1.6"/>
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="12" r="1.6"/>
  </g>
  <g fill="none" stroke="#616161" stroke-width="1.1" class="jp-icon3">
    <ellipse cx="12" cy="12" rx="6.5" ry="2.6"/>
    <ellipse cx="12" cy="12" rx="6.5" ry="2.6" transform="rotate(60 12 12)"/>
    <ellipse cx="12" cy="12" rx="6.5" ry="2.6" transform="rotate(120 12 12)"/>
  </g>
</svg>`;

export const reactboxIcon = new LabIcon({ name: 'jupyter-reactbox:icon', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-reactbox:plugin',
  description: 'ReactBox sidebar, preview panels, launcher card and commands.',
  autoStart: true,
  optional: [ILabShell, ILayoutRestorer, ICommandPalette, ILauncher, IRenderMimeRegistry],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    const settings = ServerConnection.makeSettings();
    const api = new ReactBoxAPI(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );
    const model = new ProjectsModel(api);
    const tracker = new WidgetTracker<MainAreaWidget<PreviewPanel>>({ namespace: 'reactbox' });

    const openPreview = (id: string): MainAreaWidget<PreviewPanel> => {
      const existing = tracker.find(w => w.content.projectId === id);
      if (existing) {
        app.shell.activateById(existing.id);
        return existing;
      }
      const openSource = (file: string, line: number, column: number) =>
        void openInEditor(app, `${DRIVE_NAME}:${id}/${file}`, line, column);
      const widget = new MainAreaWidget({ content: new PreviewPanel(api, id, openSource) });
      widget.id = `reactbox-preview-area-${id}`;
      widget.title.label = `Preview: ${id}`;
      widget.title.icon = reactboxIcon;
      const beside = app.shell.currentWidget;
      app.shell.add(widget, 'main', beside ? { ref: beside.id, mode: 'split-right' } : undefined);
      void tracker.add(widget);
      app.shell.activateById(widget.id);
      return widget;
    };

    const showLogs = async (id: string): Promise<void> => {
      const content = new Widget();
      content.addClass('jp-ReactBox-logview');
      const pre = document.createElement('pre');
      content.node.append(pre);
      try {
        pre.textContent = await api.logs(id);
      } catch (error) {
        pre.textContent = String(error);
      }
      const widget = new MainAreaWidget({ content });
      widget.id = `reactbox-logs-${id}-${Date.now()}`;
      widget.title.label = `Logs: ${id}`;
      widget.title.closable = true;
      app.shell.add(widget, 'main', { mode: 'split-bottom' });
    };

    // An element Alt-clicked in a preview that a notebook shows (the widget's frame,
    // marked with its project): the server keeps it for the next edit, and the
    // widget shows it.  (The panel handles its own frame.)
    window.addEventListener('message', (event: MessageEvent) => {
      const selection = selectionFromMessage(event.data);
      if (!selection) {
        return;
      }
      const frames = document.querySelectorAll<HTMLIFrameElement>('iframe[data-reactbox-project]');
      const frame = Array.from(frames).find(f => f.contentWindow === event.source);
      const project = frame?.dataset.reactboxProject;
      if (project) {
        api.select(project, selection).catch(error => console.warn('jupyter-reactbox:', error));
      }
    });

    const sidebar = new ReactBoxSidebar(model, { open: openPreview, logs: showLogs });
    sidebar.title.icon = reactboxIcon;
    app.shell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: w => ({ id: w.content.projectId }),
        name: w => w.content.projectId
      });
    }

    app.commands.addCommand(CommandIDs.sidebar, {
      label: 'ReactBox: Show projects',
      icon: reactboxIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.upload, {
      label: args => (args.isLauncher ? 'ReactBox app' : 'ReactBox: Upload app'),
      caption: 'Upload a React app (ZIP) and preview it beside your notebook',
      icon: reactboxIcon,
      execute: () => {
        app.shell.activateById(sidebar.id);
        sidebar.input.click();
      }
    });
    app.commands.addCommand(CommandIDs.open, {
      label: 'ReactBox: Open preview',
      caption: 'Open a project’s live preview beside the current document',
      icon: reactboxIcon,
      execute: async args => {
        let id = typeof args.id === 'string' ? args.id : '';
        if (!id) {
          await model.refresh();
          const ids = model.projects.map(p => p.id);
          if (!ids.length) {
            app.shell.activateById(sidebar.id);
            return;
          }
          const choice = await InputDialog.getItem({ title: 'Open the preview of', items: ids });
          if (!choice.button.accept || !choice.value) {
            return;
          }
          id = choice.value;
        }
        return openPreview(id);
      }
    });
    for (const command of [CommandIDs.upload, CommandIDs.open, CommandIDs.sidebar]) {
      palette?.addItem({ command, category: 'ReactBox' });
    }
    launcher?.add({ command: CommandIDs.upload, category: 'Other', rank: 10, args: { isLauncher: true } });

    rendermime?.addFactory(
      {
        safe: true,
        mimeTypes: [OPEN_MIME],
        defaultRank: 10,
        createRenderer: () => new OpenRenderer(id => openPreview(id))
      },
      0
    );
    labShell?.layoutModified.connect(() => {
      model.active = sidebar.isVisible;
    });
  }
};

/** The ReactBox drive, and a file browser of it in the left sidebar. */
const drivePlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-reactbox:drive',
  description: "The projects' files in a file browser of their own, opened in Lab's editor.",
  autoStart: true,
  requires: [IFileBrowserFactory],
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, factory: IFileBrowserFactory, restorer: ILayoutRestorer | null) => {
    const settings = ServerConnection.makeSettings();
    const api = new ReactBoxAPI(settings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, settings)
    );
    app.serviceManager.contents.addDrive(new ReactBoxDrive(api, settings));
    const browser = factory.createFileBrowser('reactbox-files', { driveName: DRIVE_NAME });
    browser.title.icon = reactboxIcon;
    browser.title.caption = 'ReactBox files';
    browser.id = 'reactbox-files';
    app.shell.add(browser, 'left', { rank: 610 });
    restorer?.add(browser, browser.id);
  }
};

/** What `docmanager:open` gives for a file opened in Lab's editor (the parts used). */
interface OpenedInEditor {
  context?: { ready: Promise<void> };
  content?: {
    editor?: {
      setCursorPosition(position: { line: number; column: number }): void;
      revealPosition?(position: { line: number; column: number }): void;
      focus(): void;
    };
  };
}

/** Open a file in Lab's editor at a line (1-based) and column. */
async function openInEditor(app: JupyterFrontEnd, path: string, line: number, column: number) {
  const opened = (await app.commands.execute('docmanager:open', { path, factory: 'Editor' })) as
    | OpenedInEditor
    | undefined;
  await opened?.context?.ready;
  const editor = opened?.content?.editor;
  if (editor) {
    const position = { line: Math.max(0, line - 1), column: Math.max(0, column - 1) };
    editor.setCursorPosition(position);
    editor.revealPosition?.(position);
    editor.focus();
  }
}

/** Renders `%reactbox open NAME`: opens the panel (once, while fresh) and says so. */
class OpenRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(private readonly open: (id: string) => unknown) {
    super();
    this.addClass('jp-ReactBox-openOutput');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = model.data[OPEN_MIME] as { id?: string; requested?: number } | undefined;
    const id = data?.id;
    if (!id) {
      this.node.textContent = 'No project named.';
      return;
    }
    const again = document.createElement('button');
    again.className = 'jp-Button jp-mod-styled jp-mod-minimal';
    again.textContent = `Open the preview of ${id}`;
    again.addEventListener('click', () => this.open(id));
    const note = document.createElement('span');
    const fresh =
      typeof data.requested === 'number' && Math.abs(Date.now() - data.requested) < FRESH_MS;
    note.textContent = fresh ? `Opened ${id} beside the notebook. ` : '';
    this.node.replaceChildren(note, again);
    if (fresh) {
      this.open(id);
    }
  }
}

export default [plugin, drivePlugin];
