/** The OpenAI-compatible HTTP API the page talks to: models and streaming chat completions. */

import { readChatStream, type StreamItem } from "./chatstream";
import { ApiError, errorFrom } from "./errors";
import { readModel, type ModelInfo } from "./library";

export interface Connection {
  /** "" means the page's own origin. */
  baseUrl: string;
  apiKey: string;
}

export type ContentPart = { type: "text"; text: string } | { type: "image_url"; image_url: { url: string } };

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string | ContentPart[];
}

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  temperature?: number;
  top_p?: number;
  max_tokens?: number;
}

/** Join the configured base URL and an API path; accepts a base with or without `/v1`. */
export function apiUrl(baseUrl: string, path: string): string {
  let base = baseUrl.trim().replace(/\/+$/, "");
  if (base.endsWith("/v1") && path.startsWith("/v1/")) base = base.slice(0, -3);
  return `${base}${path}`;
}

function headers(connection: Connection, json: boolean): Record<string, string> {
  const result: Record<string, string> = { Accept: json ? "application/json" : "text/event-stream" };
  if (json) result["Content-Type"] = "application/json";
  if (connection.apiKey.trim()) result["Authorization"] = `Bearer ${connection.apiKey.trim()}`;
  return result;
}

async function send(url: string, init: RequestInit): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError("unreachable", `No answer from ${url}.`);
  }
  if (!response.ok) {
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's HTML error page, say): the status alone classifies it.
    }
    throw errorFrom(response.status, body);
  }
  return response;
}

/** The models the server offers, in its order, with their state in its library. */
export async function listModels(connection: Connection, signal?: AbortSignal): Promise<ModelInfo[]> {
  const response = await send(apiUrl(connection.baseUrl, "/v1/models"), {
    headers: headers(connection, false),
    signal,
  });
  let body: unknown;
  try {
    body = await response.json();
  } catch {
    throw new ApiError("protocol", "The model list is not JSON.");
  }
  const data = (body as { data?: unknown })?.data;
  if (!Array.isArray(data)) throw new ApiError("protocol", "The model list has no `data` array.");
  return data.map(readModel).filter((model): model is ModelInfo => model !== null);
}

/** The library's actions, as llama-server's router names them: `pull` downloads a catalog
 * model, `load` loads one, `unload` unloads one (or cancels its download). */
export type LibraryAction = "pull" | "load" | "unload";

export async function libraryAction(connection: Connection, action: LibraryAction, model: string): Promise<void> {
  await send(apiUrl(connection.baseUrl, `/models/${action}`), {
    method: "POST",
    headers: headers(connection, true),
    body: JSON.stringify({ model }),
  });
}

/** Start a streaming chat completion and yield its items until `[DONE]`. */
export async function* streamChat(
  connection: Connection,
  request: ChatRequest,
  signal: AbortSignal,
): AsyncGenerator<StreamItem> {
  const response = await send(apiUrl(connection.baseUrl, "/v1/chat/completions"), {
    method: "POST",
    headers: { ...headers(connection, true), Accept: "text/event-stream" },
    body: JSON.stringify({ ...request, stream: true, stream_options: { include_usage: true } }),
    signal,
  });
  if (!response.body) throw new ApiError("protocol", "The server sent no response body.");
  yield* readChatStream(response.body);
}
