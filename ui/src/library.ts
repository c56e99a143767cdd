/** The server's model library as `GET /v1/models` describes it (llama-server's router shape:
 * each model's `status.value` is `loaded`, `loading`, `unloaded`, `downloading` or `failed`),
 * read leniently so that a plain OpenAI server, which sends ids alone, still gives a usable
 * list: a model without a status is taken as loaded. */

export type ModelState = "loaded" | "loading" | "unloaded" | "downloading" | "failed";

export interface Progress {
  done: number;
  total: number;
}

export interface ModelInfo {
  id: string;
  state: ModelState;
  capabilities: string[];
  /** Bytes on disk (or to download: `size`); null when the server does not say. */
  sizeBytes: number | null;
  contextLength: number | null;
  /** false: the server estimates this model does not fit the memory it has. */
  fits: boolean | null;
  /** false: a catalog entry not downloaded yet. */
  downloaded: boolean;
  progress: Progress | null;
  /** Why the last load or download failed. */
  reason: string | null;
}

const STATES: readonly ModelState[] = ["loaded", "loading", "unloaded", "downloading", "failed"];

function numberOr(value: unknown, fallback: number | null): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : fallback;
}

/** Download progress: ours is `{done, total}`; llama-server's is one of those per file URL. */
export function readProgress(value: unknown): Progress | null {
  if (!value || typeof value !== "object") return null;
  const single = value as { done?: unknown; total?: unknown };
  if (typeof single.done === "number") return { done: single.done, total: numberOr(single.total, 0) ?? 0 };
  let done = 0;
  let total = 0;
  let any = false;
  for (const file of Object.values(value as Record<string, unknown>)) {
    const part = readProgress(file);
    if (part) {
      any = true;
      done += part.done;
      total += part.total;
    }
  }
  return any ? { done, total } : null;
}

/** One entry of `/v1/models`' `data`, or null when it has no id. */
export function readModel(entry: unknown): ModelInfo | null {
  if (!entry || typeof entry !== "object") return null;
  const raw = entry as Record<string, unknown>;
  if (typeof raw.id !== "string" || raw.id === "") return null;
  const status = (raw.status && typeof raw.status === "object" ? raw.status : {}) as Record<string, unknown>;
  let state: ModelState = STATES.includes(status.value as ModelState) ? (status.value as ModelState) : "loaded";
  if (status.failed === true) state = "failed"; // llama-server: `unloaded` with `failed: true`
  const capabilities = Array.isArray(raw.capabilities)
    ? raw.capabilities.filter((c): c is string => typeof c === "string")
    : [];
  const reason = typeof status.reason === "string" ? status.reason : typeof status.error === "string" ? status.error : null;
  return {
    id: raw.id,
    state,
    capabilities,
    sizeBytes: numberOr(raw.size, null),
    contextLength: numberOr(raw.context_length, null),
    fits: typeof raw.fits === "boolean" ? raw.fits : null,
    downloaded: raw.downloaded !== false,
    progress: readProgress(status.progress),
    reason,
  };
}

/** Whether the chat can talk to it: embedding-only and rerank-only models cannot. A model
 * that lists no capabilities (another OpenAI server) is offered. */
export function canChat(model: ModelInfo): boolean {
  const caps = model.capabilities;
  if (caps.length === 0 || caps.includes("chat") || caps.includes("completion")) return true;
  return !(caps.includes("embedding") || caps.includes("rerank"));
}

/** Whether the chat can pick it now: a chat model that is on this machine. */
export function canPick(model: ModelInfo): boolean {
  return canChat(model) && model.downloaded && model.state !== "downloading";
}

export type Section = "Loaded" | "Downloaded" | "Downloadable";

export function sectionOf(model: ModelInfo): Section {
  if (model.state === "loaded" || model.state === "loading") return "Loaded";
  return model.downloaded && model.state !== "downloading" ? "Downloaded" : "Downloadable";
}

const SECTIONS: readonly Section[] = ["Loaded", "Downloaded", "Downloadable"];

/** The library in the menu's order: loaded first, then downloaded, then downloadable, each
 * keeping the server's order. Empty sections are left out. */
export function grouped(models: ModelInfo[]): Array<{ section: Section; models: ModelInfo[] }> {
  return SECTIONS.map((section) => ({ section, models: models.filter((m) => sectionOf(m) === section) })).filter(
    (group) => group.models.length > 0,
  );
}

/** Whether something is under way that the page should watch (polling the list). */
export function busy(models: ModelInfo[]): boolean {
  return models.some((m) => m.state === "loading" || m.state === "downloading");
}

export function formatBytes(bytes: number | null): string {
  if (bytes === null || bytes <= 0) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** 0-100, or null when the total is unknown. */
export function percent(progress: Progress | null): number | null {
  if (!progress || progress.total <= 0) return null;
  return Math.min(100, Math.floor((progress.done / progress.total) * 100));
}
