// The designer: prompt → planned layout → editable boxes over the live glyph mask →
// generation with progress, a gallery, a history, downloads. The web page (main.ts) and the
// Figma plug-in's iframe (plugin/figma/ui.ts) both start it, with a different `Host`.

import { ApiError, Client } from "./api";
import { type ChangeReason, LayoutEditor } from "./editor";
import { type HistoryEntry, type HistoryStore, record } from "./history";
import { bytesToBase64, parseReplacements } from "./edit";
import { bareLayout, generationSide, parseLayoutJson } from "./layout";
import { parametersText, withText } from "./png";
import type { EditRequest, GenerationRequest, GenerationSettings, Job, JobEvent, Layout } from "./types";

/** A finished image, as the host may want it (Figma inserts it as a layer). */
export interface ResultImage {
  bytes: Uint8Array;
  seed: number;
  prompt: string;
}

/** Where the designer runs. */
export interface Host {
  kind: "web" | "figma";
  /** The server URL to start with ("" = this page's origin). */
  server: string;
  history: HistoryStore;
  /** Figma: places images as layers above the selection. */
  insert?: (images: ResultImage[], layout: Layout, addText: boolean) => void;
  /** Figma: remembers the server URL and key. */
  saveServer?: (server: string, apiKey: string) => void;
}

export interface Designer {
  /** Figma: the selected frame's size, text layers as keywords and boxes. */
  applySelection(sel: { name: string; layout: Layout; keywords: string[] }): void;
  setServer(server: string, apiKey: string): void;
  setHistory(entries: HistoryEntry[]): void;
  editor: LayoutEditor;
}

/** What the web page opens with, planned: a poster the embedded demo model knows the style of. */
const EXAMPLE_PROMPT = "a navy gradient poster with the words 'Letterpress' and 'DEMO'";

const TEMPLATE = `
<header class="bar">
  <h1>Letterpress designer</h1>
  <span class="ready" data-testid="ready"></span>
  <details class="server" data-testid="server-settings">
    <summary>Server</summary>
    <label>URL <input name="server" placeholder="this page's server" spellcheck="false"></label>
    <label>API key <input name="apiKey" type="password" autocomplete="off"></label>
    <button type="button" data-action="connect">Connect</button>
  </details>
</header>
<div class="notice" role="alert" data-testid="notice" hidden></div>
<main class="columns">
  <section class="panel plan">
    <h2>Layout</h2>
    <label>Prompt <textarea name="prompt" rows="3" maxlength="1000" placeholder="a summer festival poster that says 'SUMMER' and 'JULY 14'"></textarea></label>
    <label>Keywords <input name="keywords" placeholder="SUMMER/JULY 14 (empty: the quoted words)"></label>
    <div class="row">
      <label>Width <input name="width" type="number" min="64" max="2048" step="8" value="512"></label>
      <label>Height <input name="height" type="number" min="64" max="2048" step="8" value="512"></label>
    </div>
    <div class="row">
      <label>Planner <select name="planner"><option value="typographic">typographic</option><option value="llm">LLM</option></select></label>
      <label>Layout seed <input name="layoutSeed" type="number" min="0" placeholder="random"></label>
    </div>
    <div class="row">
      <button type="button" data-action="plan">Plan layout</button>
      <button type="button" data-action="replan" title="plan again with a new seed">Re-plan</button>
    </div>
    <h3>Selected line</h3>
    <fieldset class="line" data-testid="line-editor" disabled>
      <label>Text <textarea name="lineText" rows="2"></textarea></label>
      <div class="row">
        <label>Font <input name="lineFont" placeholder="DejaVu Sans Bold"></label>
        <label>Colour <input name="lineColor" type="color" value="#ffffff"></label>
        <label>Align <select name="lineAlign"><option value="">center</option><option value="left">left</option><option value="right">right</option></select></label>
      </div>
      <div class="row">
        <button type="button" data-action="delete-line">Delete line</button>
        <button type="button" data-action="regenerate-line" disabled
          title="Select a result in the gallery first">Regenerate this line</button>
      </div>
    </fieldset>
    <div class="row">
      <button type="button" data-action="add-line">Add line</button>
      <button type="button" data-action="export">Export layout JSON</button>
      <label class="file-button">Import layout JSON <input name="import" type="file" accept="application/json,.json"></label>
    </div>
  </section>
  <section class="panel canvas" data-testid="canvas"></section>
  <section class="panel generate">
    <h2>Generate</h2>
    <label>Negative prompt <input name="negative"></label>
    <div class="row">
      <label>Seed <input name="seed" type="number" min="0" placeholder="random"></label>
      <label>Images <input name="n" type="number" min="1" max="8" value="1"></label>
    </div>
    <div class="row">
      <label>Steps <input name="steps" type="number" min="1" max="150" value="20"></label>
      <label>Guidance <input name="guidance" type="number" min="0" max="30" step="0.5" value="7.5"></label>
    </div>
    <div class="row">
      <label>Scheduler <select name="scheduler"></select></label>
      <label>ControlNet scale <input name="controlScale" type="number" min="0" max="2" step="0.1" value="1"></label>
    </div>
    <label>Preview every <input name="previewEvery" type="number" min="0" max="150" value="1"> steps</label>
    <label class="figma-only"><input name="addText" type="checkbox"> add the layout's text as editable layers</label>
    <div class="row">
      <button type="button" data-action="generate" class="primary">Generate</button>
      <button type="button" data-action="cancel" disabled>Cancel</button>
    </div>
    <div class="progress" data-testid="progress" hidden>
      <progress max="1" value="0"></progress>
      <span class="status" data-testid="status"></span>
      <img class="step-preview" data-testid="step-preview" alt="step preview" hidden>
    </div>
  </section>
</main>
<section class="panel edit-text" data-testid="edit-text">
  <h2>Edit text in an uploaded image</h2>
  <label>Picture (PNG) <input name="editImage" type="file" accept="image/png"></label>
  <label>Replacements, one OLD=NEW per line
    <textarea name="editReplacements" rows="3" placeholder="SALE=DEAL"></textarea></label>
  <p class="hint">Uses the prompt, seed, steps and guidance above; only the edited boxes change.</p>
  <button type="button" data-action="edit-text">Edit text</button>
</section>
<section class="panel gallery-panel">
  <h2>Results</h2>
  <div class="gallery" data-testid="gallery"></div>
</section>
<section class="panel history-panel">
  <h2>History</h2>
  <ol class="history" data-testid="history"></ol>
</section>
`;

export function startDesigner(root: HTMLElement, host: Host): Designer {
  root.classList.add("designer", `host-${host.kind}`);
  root.innerHTML = TEMPLATE;
  const $ = <T extends Element = HTMLInputElement>(sel: string) => {
    const el = root.querySelector<T>(sel);
    if (!el) throw new Error(`designer template lacks ${sel}`);
    return el;
  };
  const field = (name: string) => $<HTMLInputElement>(`[name="${name}"]`);
  const button = (action: string) => $<HTMLButtonElement>(`[data-action="${action}"]`);
  const notice = $<HTMLElement>(".notice");
  const client = new Client(host.server);
  const editor = new LayoutEditor($<HTMLElement>(".canvas"));
  let history = host.history.load();
  let current: { job: Job; abort: AbortController } | null = null;
  /** The gallery result "Regenerate this line" repaints: its job and image. */
  let base: { job: Job; file: string; seed: number; card: HTMLElement } | null = null;
  let generationAvailable = false;

  field("server").value = host.server;

  const showError = (e: unknown) => {
    const message = e instanceof ApiError ? (e.param ? `${e.param}: ${e.message}` : e.message) : String((e as Error)?.message ?? e);
    notice.textContent = message;
    notice.className = "notice error";
    notice.hidden = false;
  };
  const showInfo = (message: string) => {
    notice.textContent = message;
    notice.className = "notice info";
    notice.hidden = !message;
  };
  const guard =
    <A extends unknown[]>(f: (...a: A) => Promise<void>) =>
    (...a: A) => {
      f(...a).catch(showError);
    };

  // --- Server readiness: which schedulers, or why generation is off ---------------------------
  const ready = $<HTMLElement>(".ready");
  // The Figma UI learns its server from the sandbox (clientStorage) a moment after it starts;
  // until then it must not call the default one.
  let connected = host.kind !== "figma";
  const refreshReady = guard(async () => {
    if (!connected) return;
    const info = await client.ready();
    const g = info.generation;
    const select = $<HTMLSelectElement>('[name="scheduler"]');
    const keep = select.value;
    select.replaceChildren(
      ...(g.schedulers?.length ? g.schedulers : ["default"]).map((s) => new Option(s, s)),
    );
    if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
    ready.textContent = g.available ? `model: ${g.model ?? "ready"}` : `generation unavailable: ${g.reason ?? "no model"}`;
    ready.className = g.available ? "ready ok" : "ready off";
    generationAvailable = g.available;
    button("generate").disabled = !g.available || current !== null;
    button("edit-text").disabled = !g.available || current !== null;
    button("generate").title = g.available ? "" : (g.reason ?? "");
    syncRegenerate();
  });

  // --- Live mask preview ------------------------------------------------------------------------
  // At most one render in flight; edits made meanwhile are rendered right after it.
  let renderInFlight = false;
  let renderAgain = false;
  let renders = 0;
  const renderMask = async () => {
    if (!connected) return;
    if (renderInFlight) {
      renderAgain = true;
      return;
    }
    renderInFlight = true;
    try {
      do {
        renderAgain = false;
        const layout = bareLayout(editor.layout);
        try {
          const png = await client.renderMask(layout);
          editor.setMask(URL.createObjectURL(png));
          renders++;
          editor.stage.dataset.renders = String(renders);
          editor.stage.dataset.maskError = "";
        } catch (e) {
          editor.stage.dataset.maskError = (e as Error).message;
          showError(e);
        }
      } while (renderAgain);
    } finally {
      renderInFlight = false;
    }
  };
  let maskTimer: ReturnType<typeof setTimeout> | undefined;
  editor.onChange = (_layout: Layout, _reason: ChangeReason, final: boolean) => {
    clearTimeout(maskTimer);
    maskTimer = setTimeout(() => void renderMask(), final ? 0 : 60);
    syncLineEditor();
  };

  // --- Selected line ------------------------------------------------------------------------------
  const lineBox = $<HTMLFieldSetElement>("fieldset.line");
  // "Regenerate this line" needs a gallery result to repaint, a line, a model and no job running.
  const syncRegenerate = () => {
    const b = button("regenerate-line");
    const line = editor.layout.lines[editor.selected];
    b.disabled = !(base && line && generationAvailable && current === null);
    b.title = !base
      ? "Select a result in the gallery first"
      : `Repaint line ${editor.selected + 1} of the result with seed ${base.seed}, keeping the rest`;
  };
  const syncLineEditor = () => {
    const line = editor.layout.lines[editor.selected];
    lineBox.disabled = !line;
    syncRegenerate();
    if (!line) return;
    const text = field("lineText") as unknown as HTMLTextAreaElement;
    if (document.activeElement !== text) text.value = line.text;
    if (document.activeElement !== field("lineFont")) field("lineFont").value = line.font ?? "";
    field("lineColor").value = line.color ?? "#ffffff";
    $<HTMLSelectElement>('[name="lineAlign"]').value = line.align ?? "";
  };
  editor.onSelect = syncLineEditor;
  const editLine = (patch: Record<string, string | undefined>) => editor.update(editor.selected, patch);
  field("lineText").addEventListener("input", (e) => editLine({ text: (e.target as HTMLTextAreaElement).value }));
  field("lineFont").addEventListener("change", (e) => editLine({ font: (e.target as HTMLInputElement).value.trim() || undefined }));
  field("lineColor").addEventListener("change", (e) => editLine({ color: (e.target as HTMLInputElement).value }));
  $<HTMLSelectElement>('[name="lineAlign"]').addEventListener("change", (e) =>
    editLine({ align: (e.target as HTMLSelectElement).value || undefined }),
  );
  button("delete-line").addEventListener("click", () => editor.remove());
  button("add-line").addEventListener("click", () => editor.add());

  // --- Planning ---------------------------------------------------------------------------------------
  const keywordsOf = (text: string) =>
    text
      .split("/")
      .map((k) => k.trim())
      .filter(Boolean);
  const plan = (newSeed: boolean) =>
    guard(async () => {
      const prompt = (field("prompt") as unknown as HTMLTextAreaElement).value.trim();
      if (!prompt) throw new Error("write a prompt first");
      const keywords = keywordsOf(field("keywords").value);
      const seedText = field("layoutSeed").value;
      const p = await client.plan({
        prompt,
        keywords: keywords.length ? keywords : undefined,
        width: Number(field("width").value) || 512,
        height: Number(field("height").value) || 512,
        seed: newSeed || seedText === "" ? null : Number(seedText),
        planner: $<HTMLSelectElement>('[name="planner"]').value as "typographic" | "llm",
      });
      field("layoutSeed").value = String(p.seed);
      if (!field("keywords").value) field("keywords").placeholder = p.keywords.join("/");
      showInfo(p.warnings.length ? `planner: ${p.warnings.join("; ")}` : "");
      editor.setLayout(bareLayout(p));
      editor.select(p.lines.length ? 0 : -1);
    });
  // The web page opens with an example already planned, so Generate works at once. Its plan
  // is dropped if the user has changed the prompt or the layout while it was on its way.
  const planExample = async () => {
    const prompt = field("prompt") as unknown as HTMLTextAreaElement;
    if (prompt.value || editor.layout.lines.length) return;
    prompt.value = EXAMPLE_PROMPT;
    try {
      const p = await client.plan({ prompt: EXAMPLE_PROMPT, width: 512, height: 512, seed: 7 });
      if (prompt.value !== EXAMPLE_PROMPT || editor.layout.lines.length) return;
      field("layoutSeed").value = String(p.seed);
      editor.setLayout(bareLayout(p));
      editor.select(p.lines.length ? 0 : -1);
    } catch {
      // No server yet (or it refused): the page works as before, with an empty layout.
    }
  };
  button("plan").addEventListener("click", plan(false));
  button("replan").addEventListener("click", plan(true));

  // --- Import / export --------------------------------------------------------------------------------
  button("export").addEventListener("click", () => {
    const blob = new Blob([JSON.stringify(bareLayout(editor.layout), null, 2)], { type: "application/json" });
    download(blob, "letterpress-layout.json");
  });
  field("import").addEventListener(
    "change",
    guard(async () => {
      const file = field("import").files?.[0];
      if (!file) return;
      const layout = parseLayoutJson(await file.text());
      field("import").value = "";
      field("width").value = String(layout.width);
      field("height").value = String(layout.height);
      editor.setLayout(layout);
      showInfo(`imported ${file.name}: ${layout.lines.length} lines`);
    }),
  );

  // --- Generation -------------------------------------------------------------------------------------
  const settingsFromForm = (): GenerationSettings => {
    const num = (name: string, fallback: number) => {
      const v = field(name).value;
      return v === "" ? fallback : Number(v);
    };
    const seed = field("seed").value;
    return {
      prompt: (field("prompt") as unknown as HTMLTextAreaElement).value.trim(),
      negative_prompt: field("negative").value,
      keywords: keywordsOf(field("keywords").value),
      seed: seed === "" ? null : Number(seed),
      steps: num("steps", 20),
      guidance_scale: num("guidance", 7.5),
      scheduler: $<HTMLSelectElement>('[name="scheduler"]').value,
      n: num("n", 1),
      controlnet_conditioning_scale: num("controlScale", 1),
      preview_every: num("previewEvery", 0),
    };
  };
  const restore = (s: GenerationSettings, layout: Layout) => {
    (field("prompt") as unknown as HTMLTextAreaElement).value = s.prompt;
    field("negative").value = s.negative_prompt;
    field("keywords").value = s.keywords.join("/");
    field("seed").value = s.seed === null ? "" : String(s.seed);
    field("steps").value = String(s.steps);
    field("guidance").value = String(s.guidance_scale);
    const select = $<HTMLSelectElement>('[name="scheduler"]');
    if (![...select.options].some((o) => o.value === s.scheduler)) select.append(new Option(s.scheduler, s.scheduler));
    select.value = s.scheduler;
    field("n").value = String(s.n);
    field("controlScale").value = String(s.controlnet_conditioning_scale);
    field("previewEvery").value = String(s.preview_every);
    // An edit's entry has no layout of its own (0×0): the editor keeps the current one.
    if (layout.width > 0 && layout.height > 0) {
      field("width").value = String(layout.width);
      field("height").value = String(layout.height);
      editor.setLayout(layout);
    }
  };

  const progressBox = $<HTMLElement>(".progress");
  const progressBar = $<HTMLProgressElement>(".progress progress");
  const statusText = $<HTMLElement>(".progress .status");
  const stepPreview = $<HTMLImageElement>(".step-preview");
  const setStatus = (status: string, text = status) => {
    progressBox.hidden = false;
    progressBox.dataset.status = status;
    statusText.textContent = text;
  };
  const running = (on: boolean) => {
    button("cancel").disabled = !on;
    button("generate").disabled = on;
    button("edit-text").disabled = on || !generationAvailable;
    if (on) button("regenerate-line").disabled = true;
    else syncRegenerate();
  };

  const onEvent = (e: JobEvent) => {
    const d = e.data;
    switch (e.event) {
      case "queued":
        setStatus("queued", "queued");
        break;
      case "layout":
        setStatus("planning", "layout ready");
        break;
      case "rendering":
        setStatus("rendering", "glyph mask drawn");
        break;
      case "step": {
        const step = Number(d.step);
        const steps = Number(d.steps);
        progressBar.max = steps;
        progressBar.value = step;
        setStatus("running", `step ${step} of ${steps}`);
        if (typeof d.preview === "string") {
          stepPreview.src = d.preview;
          stepPreview.hidden = false;
        }
        break;
      }
      case "requeued":
        setStatus("queued", String(d.reason ?? "requeued"));
        break;
      default:
        break;
    }
  };

  /** Submits a job, follows its progress, and adds the result to the gallery and history. */
  const submitAndFollow = async (submit: () => Promise<Job>, settings: GenerationSettings, layout: Layout) => {
    running(true);
    stepPreview.hidden = true;
    progressBar.value = 0;
    setStatus("queued", "submitting");
    showInfo("");
    try {
      const job = await submit();
      const abort = new AbortController();
      current = { job, abort };
      progressBox.dataset.jobId = job.id;
      remember(job, settings, layout);
      await client.follow(job.id, onEvent, abort.signal);
      const done = await client.job(job.id);
      current = null;
      remember(done, settings, layout);
      if (done.status === "succeeded" && done.output) {
        setStatus("succeeded", `done: ${done.output.images.length} image(s), seed ${done.output.seed}`);
        await showResults(done);
      } else if (done.status === "canceled") {
        setStatus("canceled", "canceled");
      } else if (done.status === "failed") {
        setStatus("failed", `failed: ${done.error?.message ?? "unknown error"}`);
      } else {
        setStatus(done.status, done.status);
      }
    } finally {
      current = null;
      running(false);
      refreshReady();
    }
  };

  const generate = guard(async () => {
    const settings = settingsFromForm();
    if (!settings.prompt) throw new Error("write a prompt first");
    if (!editor.layout.lines.length) throw new Error("plan a layout (or add a line) first");
    const layout = bareLayout(editor.layout);
    const req: GenerationRequest = {
      ...settings,
      layout,
      width: generationSide(layout.width),
      height: generationSide(layout.height),
      output_format: "png",
    };
    await submitAndFollow(() => client.generate(req), settings, layout);
  });

  // Repaints the selected line of the selected gallery result in place, with that result's
  // settings and the editor's layout (so a corrected text or box is what gets painted). The
  // seed is the form's when given, else a new one: the result's own seed would paint the
  // same line again.
  const regenerateLine = guard(async () => {
    if (!base) throw new Error("select a result in the gallery first");
    const line = editor.selected;
    if (!editor.layout.lines[line]) throw new Error("select the line to regenerate");
    const input = base.job.input;
    const seedText = field("seed").value;
    const settings: GenerationSettings = {
      prompt: input.prompt,
      negative_prompt: input.negative_prompt,
      keywords: input.keywords,
      seed: seedText === "" ? null : Number(seedText),
      steps: input.steps,
      guidance_scale: input.guidance_scale,
      scheduler: input.scheduler,
      n: 1,
      controlnet_conditioning_scale: input.controlnet_conditioning_scale,
      preview_every: input.preview_every,
    };
    const layout = bareLayout(editor.layout);
    const req: GenerationRequest = {
      ...settings,
      layout,
      width: input.width,
      height: input.height,
      output_format: "png",
      init_image: base.file,
      inpaint_line: line,
      strength: 1,
    };
    await submitAndFollow(() => client.generate(req), settings, layout);
  });

  // Replaces text in the uploaded picture (POST /v1/edits) with the form's settings.
  const editText = guard(async () => {
    const file = field("editImage").files?.[0];
    if (!file) throw new Error("choose a PNG picture to edit first");
    const replacements = parseReplacements($<HTMLTextAreaElement>('[name="editReplacements"]').value);
    const settings = { ...settingsFromForm(), n: 1 };
    const image = bytesToBase64(new Uint8Array(await file.arrayBuffer()));
    const req: EditRequest = {
      image,
      replacements,
      prompt: settings.prompt || undefined,
      seed: settings.seed,
      steps: settings.steps,
      guidance_scale: settings.guidance_scale,
      output_format: "png",
    };
    const layout: Layout = { width: 0, height: 0, lines: [] };
    await submitAndFollow(() => client.edit(req), settings, layout);
  });
  button("edit-text").addEventListener("click", editText);
  button("regenerate-line").addEventListener("click", regenerateLine);
  button("generate").addEventListener("click", generate);
  button("cancel").addEventListener(
    "click",
    guard(async () => {
      if (!current) return;
      setStatus("canceling", "canceling…");
      await client.cancel(current.job.id);
    }),
  );

  // --- Gallery ------------------------------------------------------------------------------------------
  const gallery = $<HTMLElement>(".gallery");
  const showResults = async (job: Job) => {
    if (!job.output) return;
    const input = job.input;
    const results: ResultImage[] = [];
    const cards = await Promise.all(
      job.output.images.map(async (file, i) => {
        const seed = job.output!.seed + i; // image i is painted with seed + i (engine.rs)
        const blob = await client.file(file.url);
        const bytes = new Uint8Array(await blob.arrayBuffer());
        results.push({ bytes, seed, prompt: input.prompt });
        return resultCard(job, bytes, seed, i);
      }),
    );
    gallery.prepend(...cards);
    if (host.insert && results.length) {
      // Figma: results go straight onto the canvas; the card buttons insert one again.
      host.insert(results, bareLayout(job.input.layout ?? editor.layout), field("addText").checked);
    }
  };

  const selectBase = (job: Job, index: number, seed: number, card: HTMLElement) => {
    base?.card.classList.remove("selected");
    base = { job, file: job.output!.images[index].id, seed, card };
    card.classList.add("selected");
    // Its layout goes into the editor: the lines to pick from are the ones it was painted with.
    if (job.input.layout) editor.setLayout(bareLayout(job.input.layout));
    if (!editor.layout.lines[editor.selected]) editor.select(editor.layout.lines.length ? 0 : -1);
    showInfo(`result with seed ${seed} selected: pick a line and press "Regenerate this line"`);
    syncRegenerate();
  };

  const resultCard = (job: Job, bytes: Uint8Array, seed: number, index: number): HTMLElement => {
    const card = document.createElement("figure");
    card.className = "card";
    card.dataset.testid = "result";
    card.dataset.seed = String(seed);
    card.dataset.jobId = job.id;
    const img = document.createElement("img");
    img.title = "Select this result to regenerate one of its lines";
    img.addEventListener("click", () => selectBase(job, index, seed, card));
    img.src = URL.createObjectURL(new Blob([bytes as BlobPart], { type: "image/png" }));
    img.alt = `${job.input.prompt} (seed ${seed})`;
    const caption = document.createElement("figcaption");
    const seedText = document.createElement("code");
    seedText.className = "seed";
    seedText.dataset.testid = "seed";
    seedText.textContent = String(seed);
    const copy = smallButton("Copy seed", async () => {
      try {
        await navigator.clipboard.writeText(String(seed));
        copy.textContent = "Copied";
      } catch {
        // Clipboard refused (Figma iframes, plain http): select the text for Ctrl+C instead.
        const range = document.createRange();
        range.selectNodeContents(seedText);
        getSelection()?.removeAllRanges();
        getSelection()?.addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    });
    const reuse = smallButton("Use seed", async () => {
      field("seed").value = String(seed);
      field("n").value = "1";
    });
    const save = smallButton("Download PNG", async () => {
      const s = job.input;
      const meta = withText(bytes, {
        parameters: parametersText({ ...s, seed }),
        letterpress: JSON.stringify({ ...s, seed, image_index: index, job: job.id }),
      });
      download(new Blob([meta as BlobPart], { type: "image/png" }), `letterpress-${seed}.png`);
    });
    caption.append("seed ", seedText, " ", copy, reuse, save);
    if (host.insert) {
      caption.append(
        smallButton("Insert into Figma", async () =>
          host.insert!([{ bytes, seed, prompt: job.input.prompt }], bareLayout(job.input.layout ?? editor.layout), field("addText").checked),
        ),
      );
    }
    card.append(img, caption);
    return card;
  };

  // --- History --------------------------------------------------------------------------------------------
  const historyList = $<HTMLElement>(".history");
  const remember = (job: Job, settings: GenerationSettings, layout: Layout) => {
    const entry: HistoryEntry = {
      jobId: job.id,
      createdAt: new Date().toISOString(),
      status: job.status,
      // The seed the server chose is the one to restore, not "random".
      settings: { ...settings, seed: job.input.seed ?? settings.seed, scheduler: job.input.scheduler ?? settings.scheduler },
      layout,
      images: job.output?.images.map((f) => f.url) ?? [],
    };
    history = record(history, entry);
    host.history.save(history);
    drawHistory();
  };
  const drawHistory = () => {
    historyList.replaceChildren(
      ...history.map((h) => {
        const li = document.createElement("li");
        li.dataset.testid = "history-entry";
        li.dataset.jobId = h.jobId;
        const text = document.createElement("span");
        text.textContent = `${h.createdAt.slice(0, 19).replace("T", " ")} · ${h.status} · seed ${h.settings.seed} · ${h.settings.steps} steps · ${h.settings.prompt}`;
        li.append(
          text,
          smallButton("Restore", async () => {
            restore(h.settings, h.layout);
            showInfo(`restored the settings of ${h.jobId}`);
          }),
        );
        return li;
      }),
    );
  };
  drawHistory();

  // --- Server settings ------------------------------------------------------------------------------------
  const setServer = (server: string, apiKey: string) => {
    client.base = server.replace(/\/+$/, "");
    client.apiKey = apiKey;
    field("server").value = server;
    field("apiKey").value = apiKey;
    connected = true;
    refreshReady();
    void renderMask();
  };
  button("connect").addEventListener("click", () => {
    setServer(field("server").value.trim(), field("apiKey").value);
    host.saveServer?.(field("server").value.trim(), field("apiKey").value);
  });

  refreshReady();
  editor.setLayout({ width: 512, height: 512, lines: [] });
  if (host.kind === "web") void planExample();

  return {
    editor,
    setServer,
    setHistory(entries) {
      history = entries;
      drawHistory();
    },
    applySelection(sel) {
      field("width").value = String(sel.layout.width);
      field("height").value = String(sel.layout.height);
      field("keywords").value = sel.keywords.join("/");
      const prompt = field("prompt") as unknown as HTMLTextAreaElement;
      if (!prompt.value && sel.keywords.length) prompt.value = `a poster that says ${sel.keywords.map((k) => `'${k}'`).join(" and ")}`;
      editor.setLayout(sel.layout);
      showInfo(`frame "${sel.name}": ${sel.layout.width}×${sel.layout.height}, ${sel.layout.lines.length} text layers`);
    },
  };
}

function smallButton(label: string, onClick: () => Promise<void>): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = label;
  b.addEventListener("click", () => void onClick());
  return b;
}

function download(blob: Blob, name: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
