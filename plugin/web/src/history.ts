// The history of generations: settings, layout and results of each, newest first, so any of
// them can be restored. Kept in localStorage on the web page and in figma.clientStorage in the
// plug-in (sandboxed iframes have no localStorage), behind one small interface.

import type { GenerationSettings, Layout } from "./types";

export const HISTORY_KEY = "letterpress.history.v1";
export const HISTORY_LIMIT = 50;

export interface HistoryEntry {
  jobId: string;
  createdAt: string;
  status: string;
  /** The settings as sent, with the seed the server used. */
  settings: GenerationSettings;
  layout: Layout;
  images: string[];
}

export interface HistoryStore {
  load(): HistoryEntry[];
  save(entries: HistoryEntry[]): void;
}

/** localStorage, or memory when the browser refuses storage (private mode, sandboxes). */
export function browserHistoryStore(): HistoryStore {
  let memory: HistoryEntry[] = [];
  return {
    load() {
      try {
        const raw = window.localStorage.getItem(HISTORY_KEY);
        const parsed = raw ? (JSON.parse(raw) as unknown) : [];
        return Array.isArray(parsed) ? (parsed as HistoryEntry[]) : [];
      } catch {
        return memory;
      }
    },
    save(entries) {
      memory = entries;
      try {
        window.localStorage.setItem(HISTORY_KEY, JSON.stringify(entries));
      } catch {
        // storage refused or full: the history lives as long as the page
      }
    },
  };
}

/** Adds or replaces (same job) an entry at the front, keeping at most `HISTORY_LIMIT`. */
export function record(entries: HistoryEntry[], entry: HistoryEntry): HistoryEntry[] {
  return [entry, ...entries.filter((e) => e.jobId !== entry.jobId)].slice(0, HISTORY_LIMIT);
}
