/**
 * One project's preview in the main area: the page in an iframe (it runs in a
 * sandbox: an opaque origin the server sets), reload, open in a new tab,
 * device widths, a status line (the last log lines when it failed), and an
 * instruction bar for AI edits with the diff and Undo.  Select mode: the user
 * points at an element of the preview, and the next instruction is about it
 * (the frame says which with postMessage; see static/select.js).  "Show the
 * page" and "Attach image…" give a model that takes images a screenshot of the
 * preview and the user's own images.  "Review first" (kept in this browser)
 * shows an edit's diff and writes nothing until Accept.  "Timeline" lists every
 * change with what made it: its diff, restore (as a new change) and named points.
 * A picked element offers "Open source" in Lab's editor.
 */
import { InputDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  Change,
  DEVICE_PRESETS,
  EditEvent,
  ProjectInfo,
  ReactBoxAPI,
  Point,
  ReactBoxError,
  Selection,
  ShareInfo,
  changeLabel,
  editCost,
  editStage,
  lastLines,
  selectionFromMessage,
  selectionLabel,
  modeLine,
  statusLine
} from './api';
import { button } from './sidebar';

const POLL_MS = 1000;
const REVIEW_KEY = 'jupyter-reactbox:review-first';

export class PreviewPanel extends Widget {
  readonly frame: HTMLIFrameElement;
  private readonly status: HTMLDivElement;
  private readonly mode: HTMLSpanElement;
  private readonly failure: HTMLPreElement;
  private readonly stage: HTMLDivElement;
  private readonly newTab: HTMLAnchorElement;
  private readonly exportLink: HTMLAnchorElement;
  private readonly shareButton: HTMLButtonElement;
  private readonly shareBar: HTMLDivElement;
  private readonly device: HTMLSelectElement;
  private readonly instruction: HTMLTextAreaElement;
  private readonly applyButton: HTMLButtonElement;
  private readonly editStatus: HTMLSpanElement;
  private readonly fixButton: HTMLButtonElement;
  private readonly diff: HTMLPreElement;
  private readonly selectButton: HTMLButtonElement;
  private readonly selectionBar: HTMLDivElement;
  private readonly selectionText: HTMLSpanElement;
  private readonly showPage: HTMLInputElement;
  private readonly imagePicker: HTMLInputElement;
  private readonly attached: HTMLSpanElement;
  private readonly reviewFirst: HTMLInputElement;
  private readonly acceptButton: HTMLButtonElement;
  private readonly discardButton: HTMLButtonElement;
  private proposed: string | null = null;
  private selecting = false;
  private selection: Selection | null = null;
  private info: ProjectInfo | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private src: string | null = null;

  private readonly timeline: HTMLDivElement;
  private readonly timelineButton: HTMLButtonElement;

  /**
   * @param openSource opens a file of the project at a line in Lab's editor (the
   *   ReactBox drive); without it, a picked element offers no "Open source"
   */
  constructor(
    readonly api: ReactBoxAPI,
    readonly projectId: string,
    private readonly openSource?: (file: string, line: number, column: number) => void
  ) {
    super();
    this.id = `reactbox-preview-${projectId}`;
    this.addClass('jp-ReactBox-panel');
    this.title.label = `Preview: ${projectId}`;
    this.title.closable = true;

    const toolbar = document.createElement('div');
    toolbar.className = 'jp-ReactBox-toolbar';
    const reload = button('Reload', 'jp-ReactBox-reload', () => this.reload());
    this.newTab = document.createElement('a');
    this.newTab.className = 'jp-ReactBox-newtab';
    this.newTab.textContent = 'Open in new tab';
    this.newTab.target = '_blank';
    this.newTab.rel = 'noopener';
    // The source as a ZIP: a plain download, which the user's own login opens.
    this.exportLink = document.createElement('a');
    this.exportLink.className = 'jp-ReactBox-export';
    this.exportLink.textContent = 'Export ZIP';
    this.exportLink.title = "The app's source, without node_modules or history: to upload again or take away";
    this.shareButton = button('Share', 'jp-ReactBox-share', () => void this.share());
    this.shareButton.title = 'Build the app and publish it at a link of its own that expires';
    this.shareBar = document.createElement('div');
    this.shareBar.className = 'jp-ReactBox-sharebar';
    this.shareBar.hidden = true;
    this.device = document.createElement('select');
    this.device.className = 'jp-ReactBox-device';
    this.device.title = 'Device width';
    for (const preset of DEVICE_PRESETS) {
      const option = document.createElement('option');
      option.value = preset.width === null ? '' : String(preset.width);
      option.textContent = preset.width === null ? preset.label : `${preset.label} (${preset.width}px)`;
      this.device.append(option);
    }
    this.device.addEventListener('change', () => this.applyDevice());
    this.status = document.createElement('div');
    this.status.className = 'jp-ReactBox-statusline';
    this.mode = document.createElement('span');
    this.mode.className = 'jp-ReactBox-mode';
    this.timelineButton = button('Timeline', 'jp-ReactBox-timelinebutton', () =>
      this.toggleTimeline()
    );
    this.timelineButton.title = 'Every change of the app: what made it, its diff; restore or name a point';
    toolbar.append(reload, this.newTab, this.exportLink, this.shareButton, this.device, this.timelineButton, this.mode, this.status);
    this.timeline = document.createElement('div');
    this.timeline.className = 'jp-ReactBox-timeline';
    this.timeline.hidden = true;

    this.failure = document.createElement('pre');
    this.failure.className = 'jp-ReactBox-failure';
    this.failure.hidden = true;

    this.stage = document.createElement('div');
    this.stage.className = 'jp-ReactBox-stage';
    this.frame = document.createElement('iframe');
    this.frame.className = 'jp-ReactBox-frame';
    this.frame.title = `Preview of ${projectId}`;
    this.stage.append(this.frame);

    // What the next instruction is about, once an element is picked.
    this.selectionBar = document.createElement('div');
    this.selectionBar.className = 'jp-ReactBox-selection';
    this.selectionBar.hidden = true;
    this.selectionText = document.createElement('span');
    const clear = button('×', 'jp-ReactBox-clearselection', () => this.setSelection(null));
    clear.title = 'Edit the whole app again, not this element';
    this.selectionBar.append('Editing ', this.selectionText, clear);
    if (this.openSource) {
      const open = button('Open source', 'jp-ReactBox-opensource', () => {
        if (this.selection) {
          this.openSource?.(this.selection.file, this.selection.line, this.selection.column);
        }
      });
      open.title = "Open the element's source in the editor, at its line";
      this.selectionBar.append(open);
    }

    const bar = document.createElement('div');
    bar.className = 'jp-ReactBox-instruction';
    this.selectButton = button('Select', 'jp-ReactBox-select', () => this.setSelecting(!this.selecting));
    this.selectButton.title = 'Point at an element of the preview; the instruction is then about it';
    this.selectButton.setAttribute('aria-pressed', 'false');
    this.instruction = document.createElement('textarea');
    this.instruction.placeholder = 'Say what to change, e.g. Make the header sticky';
    this.instruction.rows = 2;
    this.applyButton = button('Apply', 'jp-ReactBox-apply', () => this.applyEdit());
    this.applyButton.classList.add('jp-mod-accept');
    const undo = button('Undo', 'jp-ReactBox-undo', () => this.undo());
    // Shown while the page reports an error: the AI gets the error to fix.
    this.fixButton = button('Fix', 'jp-ReactBox-fix', () => this.applyEdit(true));
    this.fixButton.hidden = true;
    this.editStatus = document.createElement('span');
    this.editStatus.className = 'jp-ReactBox-editstatus';
    // What the model is shown besides the words (a model that takes images only).
    const [showPage, showPageBox] = checkbox(
      'Show the page',
      'jp-ReactBox-showpage',
      'Send the model a screenshot of the preview as it is now'
    );
    this.showPage = showPageBox;
    this.imagePicker = document.createElement('input');
    this.imagePicker.type = 'file';
    this.imagePicker.accept = 'image/png,image/jpeg,image/gif,image/webp';
    this.imagePicker.multiple = true;
    this.imagePicker.hidden = true;
    this.imagePicker.addEventListener('change', () => this.showAttached());
    const attach = button('Attach image…', 'jp-ReactBox-attach', () => this.imagePicker.click());
    attach.title = 'Images for the model: a sketch, a mock-up (a model that takes images only)';
    this.attached = document.createElement('span');
    this.attached.className = 'jp-ReactBox-attached';
    const [review, reviewBox] = checkbox(
      'Review first',
      'jp-ReactBox-reviewfirst',
      'Show the change first; nothing is written until you accept it'
    );
    this.reviewFirst = reviewBox;
    this.reviewFirst.checked = localStorage.getItem(REVIEW_KEY) === '1';
    this.reviewFirst.addEventListener('change', () =>
      localStorage.setItem(REVIEW_KEY, this.reviewFirst.checked ? '1' : '0')
    );
    const extras = document.createElement('div');
    extras.className = 'jp-ReactBox-extras';
    extras.append(showPage, review, attach, this.imagePicker, this.attached);
    this.acceptButton = button('Accept', 'jp-ReactBox-accept', () => this.decide(true));
    this.acceptButton.classList.add('jp-mod-accept');
    this.discardButton = button('Discard', 'jp-ReactBox-discard', () => this.decide(false));
    this.acceptButton.hidden = this.discardButton.hidden = true;
    bar.append(
      this.selectButton,
      this.instruction,
      extras,
      this.applyButton,
      this.acceptButton,
      this.discardButton,
      undo,
      this.fixButton,
      this.editStatus
    );
    this.diff = document.createElement('pre');
    this.diff.className = 'jp-ReactBox-diff';
    this.diff.hidden = true;

    this.node.append(
      toolbar,
      this.shareBar,
      this.failure,
      this.timeline,
      this.stage,
      this.selectionBar,
      bar,
      this.diff
    );
    // A new page in the frame (a reload, a restart) starts outside select mode.
    this.frame.addEventListener('load', () => this.setSelecting(false));
  }

  /** Build a snapshot for a link of its own, then show the link (or why not). */
  private async share(): Promise<void> {
    this.shareButton.disabled = true;
    this.shareBar.hidden = false;
    this.shareBar.textContent = 'Building a snapshot (in the sandbox, with no network)…';
    try {
      let shared = await this.api.share(this.projectId);
      while (shared.status === 'building') {
        await new Promise(resolve => setTimeout(resolve, 1000));
        shared = await this.api.getShare(shared.id);
      }
      this.showShare(shared);
    } catch (error) {
      this.shareBar.textContent = `Could not share: ${(error as Error).message}`;
    } finally {
      this.shareButton.disabled = false;
    }
  }

  private showShare(shared: ShareInfo): void {
    if (shared.status !== 'live') {
      this.shareBar.textContent = `The snapshot ${shared.status}: ${shared.error ?? 'see its build log'}`;
      return;
    }
    const link = document.createElement('a');
    link.className = 'jp-ReactBox-sharelink';
    link.href = shared.url;
    link.target = '_blank';
    link.rel = 'noopener';
    link.textContent = shared.url;
    const until = new Date(shared.expires * 1000).toLocaleString();
    const revoke = button('Revoke', 'jp-ReactBox-revoke', async () => {
      await this.api.revoke(shared.id);
      this.shareBar.textContent = 'Revoked: the link no longer opens.';
    });
    this.shareBar.replaceChildren('Shared at ', link, ` until ${until} `, revoke);
  }

  protected onAfterAttach(): void {
    window.addEventListener('message', this.onMessage);
    void this.poll();
  }

  protected onBeforeDetach(): void {
    window.removeEventListener('message', this.onMessage);
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Messages of this panel's preview frame only (its origin is opaque: "null"). */
  private readonly onMessage = (event: MessageEvent): void => {
    if (event.source !== this.frame.contentWindow || !event.data || typeof event.data !== 'object') {
      return;
    }
    const selection = selectionFromMessage(event.data);
    if (selection) {
      this.setSelection(selection, false);
      this.setSelecting(false, false);
      this.instruction.focus();
    } else if (event.data.reactbox === 'select' && event.data.on === false) {
      this.setSelecting(false, false); // Escape in the page
    } else if (event.data.reactbox === 'unavailable') {
      this.setSelecting(false, false);
      this.editStatus.textContent =
        'Select is not available for this app: its elements do not say where they are ' +
        'written (Vite apps in development do). Name the file in the instruction instead.';
    }
  };

  /** Turn select mode on or off (`tell`: also tell the page, which may have ended it). */
  setSelecting(on: boolean, tell = true): void {
    this.selecting = on && Boolean(this.src);
    this.selectButton.classList.toggle('jp-mod-active', this.selecting);
    this.selectButton.setAttribute('aria-pressed', String(this.selecting));
    if (tell) {
      this.frame.contentWindow?.postMessage({ reactbox: 'select', on: this.selecting }, '*');
    }
    if (this.selecting) {
      this.editStatus.textContent = 'Click an element of the preview (Escape: cancel).';
    }
  }

  /** What the next instruction is about (null: the whole app). */
  setSelection(selection: Selection | null, tell = true): void {
    this.selection = selection;
    this.selectionText.textContent = selection ? selectionLabel(selection) : '';
    this.selectionBar.hidden = !selection;
    if (!selection && tell) {
      this.frame.contentWindow?.postMessage({ reactbox: 'clear' }, '*');
    }
  }

  /** Follow the project's state; show the page once it runs. */
  async poll(): Promise<void> {
    try {
      this.update_(await this.api.get(this.projectId));
    } catch (error) {
      this.status.textContent = error instanceof ReactBoxError ? error.message : String(error);
      if (error instanceof ReactBoxError && error.status === 404) {
        this.parent?.close(); // the project was deleted: its panel goes too
        return;
      }
    }
    if (this.isAttached) {
      this.timer = setTimeout(() => void this.poll(), POLL_MS);
    }
  }

  private update_(info: ProjectInfo): void {
    const before = this.info;
    this.info = info;
    this.status.textContent = statusLine(info);
    this.status.dataset.status = info.status;
    // A workspace's app says which member it is (picked at upload, or the one app).
    this.mode.textContent = (info.member ? `${info.member} · ` : '') + modeLine(info);
    this.mode.title =
      (info.member ? `The app is ${info.member} of its workspace. ` : '') +
      (info.preview_mode?.why ?? '');
    const error = info.errors?.[info.errors.length - 1];
    this.fixButton.hidden = !error;
    this.fixButton.title = error ? `Ask the AI to fix: ${error.message}` : '';
    if (info.export_url) {
      this.exportLink.href = info.export_url;
      this.exportLink.download = `${info.id}.zip`;
    }
    const url = info.status === 'running' ? info.preview_url : null;
    if (url) {
      this.newTab.href = url;
      this.newTab.hidden = false;
    } else {
      this.newTab.removeAttribute('href');
      this.newTab.hidden = true;
    }
    if (url !== this.src) {
      this.src = url;
      if (url) {
        this.frame.src = url;
      } else {
        this.frame.removeAttribute('src');
      }
    }
    if (info.status === 'failed' && before?.status !== 'failed') {
      void this.showFailure();
    } else if (info.status !== 'failed') {
      this.failure.hidden = true;
    }
  }

  private async showFailure(): Promise<void> {
    try {
      this.failure.textContent = lastLines(await this.api.logs(this.projectId));
    } catch (error) {
      this.failure.textContent = String(error);
    }
    this.failure.hidden = false;
  }

  reload(): void {
    if (this.src) {
      this.frame.src = this.src;
    }
  }

  private applyDevice(): void {
    const width = this.device.value;
    this.frame.style.width = width ? `${width}px` : '100%';
    this.stage.classList.toggle('jp-mod-device', Boolean(width));
  }

  /** The instruction, or with `fix` the error the page reported, to the AI. */
  async applyEdit(fix = false): Promise<void> {
    const text = this.instruction.value.trim();
    if (!text && !fix) {
      this.editStatus.textContent = 'Say what to change first.';
      return;
    }
    this.applyButton.disabled = this.fixButton.disabled = true;
    this.editStatus.textContent = 'Asking the model…';
    // The edit's steps while it runs. The stream is the project's current edit:
    // an older one's steps (before this one began) are skipped.
    const started = Date.now() / 1000 - 2;
    const steps = new EventSource(this.api.editEventsUrl(this.projectId));
    steps.onmessage = (message: MessageEvent<string>) => {
      const event = JSON.parse(message.data) as EditEvent;
      if (event.stage !== 'done' && (event.time ?? started) >= started) {
        this.editStatus.textContent = editStage(event);
      }
    };
    try {
      const result = fix
        ? await this.api.fix(this.projectId)
        : await this.api.edit(this.projectId, text, {
            at: this.selection,
            screenshot: this.showPage.checked,
            images: await Promise.all(Array.from(this.imagePicker.files ?? [], dataUrl)),
            review: this.reviewFirst.checked
          });
      steps.close();
      this.editStatus.textContent = `${result.status}: ${result.message} (${editCost(result)})`;
      this.showDiff(result.diff);
      this.setProposed(result.status === 'proposed' ? result.id : null);
      if (result.status === 'applied' && !fix) {
        this.clearInstruction();
      }
    } catch (error) {
      this.editStatus.textContent = error instanceof ReactBoxError ? error.message : String(error);
    } finally {
      steps.close();
      this.applyButton.disabled = this.fixButton.disabled = false;
    }
  }

  /** A proposed change waits for Accept or Discard (null: none). */
  private setProposed(editId: string | null): void {
    this.proposed = editId;
    this.acceptButton.hidden = this.discardButton.hidden = !editId;
    this.applyButton.hidden = Boolean(editId);
  }

  /** Accept (write, then compile and check the page) or discard the proposed change. */
  async decide(accept: boolean): Promise<void> {
    const editId = this.proposed;
    if (!editId) {
      return;
    }
    this.acceptButton.disabled = this.discardButton.disabled = true;
    this.editStatus.textContent = accept ? 'Writing the reviewed change…' : 'Discarding…';
    try {
      const result = accept
        ? await this.api.accept(this.projectId, editId)
        : await this.api.discard(this.projectId, editId);
      this.editStatus.textContent = `${result.status}: ${result.message}`;
      this.showDiff(result.status === 'applied' ? result.diff : '');
      if (result.status === 'applied') {
        this.clearInstruction();
      }
    } catch (error) {
      this.editStatus.textContent = error instanceof ReactBoxError ? error.message : String(error);
      this.showDiff('');
    } finally {
      this.acceptButton.disabled = this.discardButton.disabled = false;
      this.setProposed(null);
    }
  }

  /** Done with: the words, the element they were about, the images. */
  private clearInstruction(): void {
    this.instruction.value = '';
    this.setSelection(null);
    this.imagePicker.value = '';
    this.showAttached();
  }

  private showAttached(): void {
    const files = Array.from(this.imagePicker.files ?? []);
    this.attached.textContent = files.length ? files.map(f => f.name).join(', ') : '';
    this.attached.title = this.attached.textContent;
  }

  async undo(): Promise<void> {
    try {
      const message = await this.api.undo(this.projectId);
      this.editStatus.textContent = `Undone; now at: ${message}`;
      this.showDiff(await this.api.diff(this.projectId));
    } catch (error) {
      this.editStatus.textContent = error instanceof ReactBoxError ? error.message : String(error);
    }
  }

  /** Show or hide the timeline (read again each time it opens). */
  async toggleTimeline(): Promise<void> {
    this.timeline.hidden = !this.timeline.hidden;
    this.timelineButton.setAttribute('aria-pressed', String(!this.timeline.hidden));
    if (!this.timeline.hidden) {
      await this.showTimeline();
    }
  }

  /** Named points first, then every change, newest first: what made it, when, its
   * files; its diff, restoring it (a new change, which Undo takes back), naming it. */
  async showTimeline(): Promise<void> {
    let commits: Change[];
    let points: Point[];
    try {
      ({ commits, points } = await this.api.history(this.projectId));
    } catch (error) {
      this.timeline.textContent = error instanceof ReactBoxError ? error.message : String(error);
      return;
    }
    const rows: HTMLElement[] = [];
    if (points.length) {
      const named = document.createElement('div');
      named.className = 'jp-ReactBox-points';
      named.append('Named points: ');
      for (const point of points) {
        named.append(
          button(point.name, 'jp-ReactBox-point', () => this.restoreTo(point.name, point.name))
        );
      }
      rows.push(named);
    }
    commits.forEach((change, index) => {
      const row = document.createElement('div');
      row.className = 'jp-ReactBox-change';
      row.dataset.kind = change.kind;
      const what = document.createElement('span');
      what.className = 'jp-ReactBox-changelabel';
      what.textContent = changeLabel(change);
      const when = document.createElement('time');
      when.textContent = new Date(change.time * 1000).toLocaleString();
      const files = document.createElement('span');
      files.className = 'jp-ReactBox-changefiles';
      files.textContent = change.files.slice(0, 5).join(', ') + (change.files.length > 5 ? ' …' : '');
      row.append(what, when, files);
      for (const name of change.points) {
        const badge = document.createElement('span');
        badge.className = 'jp-ReactBox-pointbadge';
        badge.textContent = name;
        row.append(badge);
      }
      const last = index === commits.length - 1;
      if (!last) {
        row.append(
          button('Diff', 'jp-ReactBox-changediff', async () =>
            this.showDiff(await this.api.diff(this.projectId, `${change.sha}~1`, change.sha))
          )
        );
      }
      if (index > 0) {
        row.append(
          button('Restore', 'jp-ReactBox-restore', () =>
            this.restoreTo(change.sha, changeLabel(change))
          )
        );
      }
      row.append(button('Name…', 'jp-ReactBox-name', () => this.nameChange(change.sha)));
      rows.push(row);
    });
    this.timeline.replaceChildren(...rows);
  }

  private async restoreTo(to: string, label: string): Promise<void> {
    try {
      const message = await this.api.restore(this.projectId, to);
      this.editStatus.textContent = `${message}. Undo takes it back.`;
    } catch (error) {
      this.editStatus.textContent = error instanceof ReactBoxError ? error.message : String(error);
    }
    await this.showTimeline();
  }

  private async nameChange(sha: string): Promise<void> {
    const answer = await InputDialog.getText({ title: 'Name this point', placeholder: 'before the redesign' });
    if (!answer.button.accept || !answer.value?.trim()) {
      return;
    }
    try {
      await this.api.namePoint(this.projectId, answer.value.trim(), sha);
    } catch (error) {
      this.editStatus.textContent = error instanceof ReactBoxError ? error.message : String(error);
    }
    await this.showTimeline();
  }

  private showDiff(diff: string): void {
    this.diff.replaceChildren(
      ...diff.split('\n').map(line => {
        const span = document.createElement('span');
        if (line.startsWith('+') && !line.startsWith('+++')) {
          span.className = 'jp-ReactBox-added';
        } else if (line.startsWith('-') && !line.startsWith('---')) {
          span.className = 'jp-ReactBox-removed';
        }
        span.textContent = line + '\n';
        return span;
      })
    );
    this.diff.hidden = !diff.trim();
  }

  dispose(): void {
    this.onBeforeDetach();
    super.dispose();
  }
}

/** A file as a data URL (the server checks that it is an image, and its size). */
function dataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error(`Could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/** A labelled checkbox: the label (to place) and its box (to read). */
function checkbox(text: string, className: string, title: string): [HTMLLabelElement, HTMLInputElement] {
  const label = document.createElement('label');
  label.className = className;
  label.title = title;
  const box = document.createElement('input');
  box.type = 'checkbox';
  label.append(box, ` ${text}`);
  return [label, box];
}
