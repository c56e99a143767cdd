/**
 * Turns the SSE events of an OpenAI streaming chat completion into what the page needs:
 * text deltas (answer and reasoning apart), the finish reason and the usage numbers. Pure: no I/O, tested on its own.
 */

import { ApiError, errorFrom, openAIError } from "./errors";
import { SseParser } from "./sse";

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export type StreamItem =
  | { type: "delta"; content: string }
  /** A thinking model's reasoning, sent apart from the answer (`delta.reasoning_content`). */
  | { type: "reasoning"; content: string }
  | { type: "finish"; reason: string }
  | { type: "usage"; usage: Usage }
  | { type: "done" };

/** Interpret the data of one SSE event. Throws ApiError for an error event or bad JSON. */
export function interpretEvent(data: string): StreamItem[] {
  if (data.trim() === "[DONE]") return [{ type: "done" }];
  let chunk: unknown;
  try {
    chunk = JSON.parse(data);
  } catch {
    throw new ApiError("protocol", `The stream carried something that is not JSON: ${data.slice(0, 80)}`);
  }
  if (openAIError(chunk)) throw errorFrom(null, chunk);
  if (typeof chunk !== "object" || chunk === null) {
    throw new ApiError("protocol", "The stream carried a chunk that is not an object.");
  }
  const items: StreamItem[] = [];
  const record = chunk as { choices?: unknown; usage?: unknown };
  if (Array.isArray(record.choices)) {
    for (const choice of record.choices) {
      if (typeof choice !== "object" || choice === null) continue;
      const { delta, finish_reason } = choice as {
        delta?: { content?: unknown; reasoning_content?: unknown };
        finish_reason?: unknown;
      };
      if (delta && typeof delta.reasoning_content === "string" && delta.reasoning_content !== "") {
        items.push({ type: "reasoning", content: delta.reasoning_content });
      }
      if (delta && typeof delta.content === "string" && delta.content !== "") {
        items.push({ type: "delta", content: delta.content });
      }
      if (typeof finish_reason === "string" && finish_reason) items.push({ type: "finish", reason: finish_reason });
    }
  }
  const usage = record.usage as { prompt_tokens?: unknown; completion_tokens?: unknown } | null | undefined;
  if (usage && typeof usage.completion_tokens === "number") {
    items.push({
      type: "usage",
      usage: {
        promptTokens: typeof usage.prompt_tokens === "number" ? usage.prompt_tokens : 0,
        completionTokens: usage.completion_tokens,
      },
    });
  }
  return items;
}

/**
 * Read a streaming response body to the end, yielding stream items. Bytes are decoded with a
 * streaming TextDecoder so that a multi-byte character split across reads stays whole.
 */
export async function* readChatStream(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamItem> {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser();
  let sawDone = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      const events = parser.push(text);
      if (done) events.push(...parser.flush());
      for (const event of events) {
        for (const item of interpretEvent(event.data)) {
          if (item.type === "done") sawDone = true;
          yield item;
        }
        if (sawDone) return;
      }
      if (done) break;
    }
  } finally {
    reader.releaseLock();
  }
  if (!sawDone) {
    throw new ApiError("server", "The reply stopped before the server finished it (the connection closed early).");
  }
}
