// A small client for letterpress-api. Errors keep the service's `{error: {code, message,
// param}}` so the page can show what was wrong and with which field.

import { SseParser } from "./sse";
import type { EditRequest, GenerationRequest, Job, JobEvent, Layout, Plan } from "./types";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

export interface ReadyInfo {
  generation: { available: boolean; reason?: string; model?: string; schedulers?: string[] };
}

export interface PlanRequest {
  prompt: string;
  keywords?: string[];
  width: number;
  height: number;
  seed?: number | null;
  planner?: "typographic" | "llm";
}

export class Client {
  /** `base` is the server's URL without a trailing slash; "" means this page's own origin. */
  constructor(
    public base: string,
    public apiKey = "",
  ) {
    this.base = base.replace(/\/+$/, "");
  }

  private headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = {};
    if (json) h["Content-Type"] = "application/json";
    if (this.apiKey) h["Authorization"] = `Bearer ${this.apiKey}`;
    return h;
  }

  /** Absolute file URLs in answers point at the server; fetch them with the key. */
  private url(pathOrUrl: string): string {
    return /^https?:\/\//.test(pathOrUrl) ? pathOrUrl : `${this.base}${pathOrUrl}`;
  }

  private async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(this.url(path), {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw new ApiError(0, "unreachable", `cannot reach the server at ${this.base || location.origin}: ${(e as Error).message}`);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async ready(): Promise<ReadyInfo> {
    // /readyz answers 503 while a model loads; its body still says why.
    const response = await fetch(this.url("/readyz")).catch((e: Error) => {
      throw new ApiError(0, "unreachable", `cannot reach the server at ${this.base || location.origin}: ${e.message}`);
    });
    return (await response.json()) as ReadyInfo;
  }

  async plan(req: PlanRequest): Promise<Plan> {
    return (await (await this.request("POST", "/v1/layouts", req)).json()) as Plan;
  }

  /** The glyph mask of `layout` as a PNG. */
  async renderMask(layout: Layout, signal?: AbortSignal): Promise<Blob> {
    return (await this.request("POST", "/v1/render", { layout }, signal)).blob();
  }

  async generate(req: GenerationRequest): Promise<Job> {
    return (await (await this.request("POST", "/v1/generations", req)).json()) as Job;
  }

  /** An edit job: followed, canceled and read back like a generation. */
  async edit(req: EditRequest): Promise<Job> {
    return (await (await this.request("POST", "/v1/edits", req)).json()) as Job;
  }

  async job(id: string): Promise<Job> {
    return (await (await this.request("GET", `/v1/generations/${id}`)).json()) as Job;
  }

  async cancel(id: string): Promise<Job> {
    return (await (await this.request("POST", `/v1/generations/${id}/cancel`)).json()) as Job;
  }

  async file(url: string): Promise<Blob> {
    return (await this.request("GET", url)).blob();
  }

  /**
   * Follows a job's event stream until its terminal event (or `signal` aborts), calling
   * `onEvent` for each. Resumes with `Last-Event-ID` if the connection drops.
   */
  async follow(id: string, onEvent: (e: JobEvent) => void, signal?: AbortSignal): Promise<void> {
    let lastId = "";
    for (let attempt = 0; attempt < 5; attempt++) {
      const headers = this.headers(false);
      headers["Accept"] = "text/event-stream";
      if (lastId) headers["Last-Event-ID"] = lastId;
      let response: Response;
      try {
        response = await fetch(this.url(`/v1/generations/${id}/events`), { headers, signal });
      } catch (e) {
        if ((e as Error).name === "AbortError") return;
        continue;
      }
      if (!response.ok) throw await errorFrom(response);
      if (!response.body) throw new ApiError(0, "no_stream", "the browser gave no response stream");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const m of parser.push(value)) {
            lastId = m.id || lastId;
            let data: Record<string, unknown> = {};
            try {
              data = JSON.parse(m.data) as Record<string, unknown>;
            } catch {
              data = { raw: m.data };
            }
            onEvent({ id: m.id, event: m.event, data });
            if (TERMINAL.has(m.event)) return;
          }
        }
      } catch (e) {
        if ((e as Error).name === "AbortError") return;
      }
    }
    throw new ApiError(0, "stream_lost", "lost the progress stream; the job goes on, reload it from the history");
  }
}

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

async function errorFrom(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; param?: string } };
    if (body.error?.message) {
      return new ApiError(response.status, body.error.code ?? "error", body.error.message, body.error.param ?? null);
    }
  } catch {
    // not JSON; fall through
  }
  return new ApiError(response.status, "http_error", `HTTP ${response.status}: ${text.slice(0, 200)}`);
}
