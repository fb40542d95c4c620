// The plug-in's iframe (inlined into dist/ui.html): the web page's designer, with results
// going to the sandbox as layers and settings kept in figma.clientStorage (a sandboxed iframe
// has no localStorage).

import { startDesigner } from "../web/src/app";
import type { HistoryEntry } from "../web/src/history";
import { DEFAULT_SERVER, type SelectionAnswer, type UiMessage } from "./logic";

const post = (msg: UiMessage) => parent.postMessage({ pluginMessage: msg }, "*");

let entries: HistoryEntry[] = [];
const root = document.getElementById("app");
if (root) {
  const designer = startDesigner(root, {
    kind: "figma",
    server: DEFAULT_SERVER,
    history: {
      load: () => entries,
      save: (e) => {
        entries = e;
        post({ type: "save-history", entries: e });
      },
    },
    insert: (images, layout, addText) => post({ type: "insert", images, layout, addText }),
    saveServer: (server, apiKey) => post({ type: "save-server", server, apiKey }),
  });
  window.addEventListener("message", (event: MessageEvent) => {
    const msg = (event.data as { pluginMessage?: Record<string, unknown> } | null)?.pluginMessage;
    if (!msg) return;
    if (msg.type === "settings") {
      entries = (msg.history as HistoryEntry[]) ?? [];
      designer.setHistory(entries);
      designer.setServer(String(msg.server ?? DEFAULT_SERVER), String(msg.apiKey ?? ""));
    } else if (msg.type === "selection") {
      const answer = msg as unknown as SelectionAnswer;
      if ("design" in answer) designer.applySelection(answer.design);
    }
  });
  post({ type: "ready" });
}
