import { describe, expect, it } from "vitest";
import { interpretEvent, readChatStream, type StreamItem } from "../src/chatstream";
import { ApiError } from "../src/errors";

function chunk(delta: Record<string, unknown>, finish: string | null = null): string {
  return JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "tiny",
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
}

const USAGE = JSON.stringify({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  choices: [],
  usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 },
});

/** A body that delivers `bytes` in reads of `size` bytes, like a slow network. */
function body(text: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}

async function collect(stream: AsyncGenerator<StreamItem>): Promise<StreamItem[]> {
  const items: StreamItem[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

const STREAM =
  [
    chunk({ role: "assistant", content: "" }),
    chunk({ content: "Hé" }),
    chunk({ content: "llo 🦙" }),
    chunk({}, "stop"),
    USAGE,
    "[DONE]",
  ]
    .map((data) => `data: ${data}\n\n`)
    .join("") + "data: {\"never\": \"read\"}\n\n";

describe("interpretEvent", () => {
  it("reads content deltas and skips the empty role chunk", () => {
    expect(interpretEvent(chunk({ role: "assistant", content: "" }))).toEqual([]);
    expect(interpretEvent(chunk({ content: "hi" }))).toEqual([{ type: "delta", content: "hi" }]);
  });

  it("reads reasoning deltas apart from content deltas", () => {
    expect(interpretEvent(chunk({ reasoning_content: "Let me see" }))).toEqual([
      { type: "reasoning", content: "Let me see" },
    ]);
    // llama.cpp sends `content: null` beside reasoning, and reasoning `null` beside content.
    expect(interpretEvent(chunk({ content: null, reasoning_content: "hm" }))).toEqual([{ type: "reasoning", content: "hm" }]);
    expect(interpretEvent(chunk({ content: "4", reasoning_content: null }))).toEqual([{ type: "delta", content: "4" }]);
    expect(interpretEvent(chunk({ reasoning_content: "" }))).toEqual([]);
  });

  it("reads the finish reason and the usage chunk", () => {
    expect(interpretEvent(chunk({}, "length"))).toEqual([{ type: "finish", reason: "length" }]);
    expect(interpretEvent(USAGE)).toEqual([{ type: "usage", usage: { promptTokens: 12, completionTokens: 3 } }]);
  });

  it("recognises [DONE]", () => {
    expect(interpretEvent("[DONE]")).toEqual([{ type: "done" }]);
  });

  it("turns an error event into an ApiError with its message and kind", () => {
    const data = JSON.stringify({
      error: { message: "prompt is 9000 tokens, context is 2048", type: "invalid_request_error", code: "context_length_exceeded" },
    });
    let caught: unknown;
    try {
      interpretEvent(data);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(ApiError);
    expect((caught as ApiError).kind).toBe("context");
    expect((caught as ApiError).message).toBe("prompt is 9000 tokens, context is 2048");
  });

  it("refuses data that is not JSON", () => {
    expect(() => interpretEvent("<html>")).toThrow(/not JSON/);
  });
});

describe("readChatStream", () => {
  it("yields the same items whatever the read size, multi-byte characters intact", async () => {
    const expected: StreamItem[] = [
      { type: "delta", content: "Hé" },
      { type: "delta", content: "llo 🦙" },
      { type: "finish", reason: "stop" },
      { type: "usage", usage: { promptTokens: 12, completionTokens: 3 } },
      { type: "done" },
    ];
    for (const size of [1, 2, 3, 5, 64, 100000]) {
      expect(await collect(readChatStream(body(STREAM, size)))).toEqual(expected);
    }
  });

  it("raises the server's error when it arrives mid-stream, after the text so far", async () => {
    const text =
      `data: ${chunk({ content: "partial" })}\n\n` +
      `data: ${JSON.stringify({ error: { message: "model crashed", type: "server_error" } })}\n\n`;
    const items: StreamItem[] = [];
    let caught: unknown;
    try {
      for await (const item of readChatStream(body(text, 7))) items.push(item);
    } catch (error) {
      caught = error;
    }
    expect(items).toEqual([{ type: "delta", content: "partial" }]);
    expect(caught).toBeInstanceOf(ApiError);
    expect((caught as ApiError).message).toBe("model crashed");
    expect((caught as ApiError).kind).toBe("server");
  });

  it("reports a stream that ends without [DONE]", async () => {
    const text = `data: ${chunk({ content: "cut" })}\n\n`;
    await expect(collect(readChatStream(body(text, 4)))).rejects.toThrow(/stopped before the server finished/);
  });

  it("accepts a last event that lacks its blank line", async () => {
    const text = `data: ${chunk({ content: "x" })}\n\ndata: [DONE]`;
    expect(await collect(readChatStream(body(text, 3)))).toEqual([
      { type: "delta", content: "x" },
      { type: "done" },
    ]);
  });
});
