import { beforeEach, describe, expect, it } from "vitest";
import { ConversationStore, newConversation, StorageError, titleFrom, type KeyValue } from "../src/storage";
import type { Conversation } from "../src/types";

/** localStorage's contract over a Map; `quotaBytes` makes writes fail like a full origin. */
class MemoryStorage implements KeyValue {
  readonly map = new Map<string, string>();
  constructor(private readonly quotaBytes = Infinity) {}
  getItem(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    let size = value.length;
    for (const [k, v] of this.map) if (k !== key) size += v.length;
    if (size > this.quotaBytes) throw new DOMException("quota", "QuotaExceededError");
    this.map.set(key, value);
  }
  removeItem(key: string): void {
    this.map.delete(key);
  }
}

function chat(title: string, updatedAt: number, texts: string[] = []): Conversation {
  const conversation = newConversation("tiny", updatedAt);
  conversation.title = title;
  conversation.messages = texts.map((content, i) => ({
    id: `${title}-${i}`,
    role: i % 2 === 0 ? "user" : "assistant",
    content,
    createdAt: updatedAt,
  }));
  return conversation;
}

let backend: MemoryStorage;
let store: ConversationStore;

beforeEach(() => {
  backend = new MemoryStorage();
  store = new ConversationStore(backend);
});

describe("ConversationStore", () => {
  it("saves, reads back and lists newest first", () => {
    const older = chat("Older", 100, ["hi"]);
    const newer = chat("Newer", 200, ["hello", "world"]);
    store.save(older);
    store.save(newer);
    expect(store.list().map((s) => s.title)).toEqual(["Newer", "Older"]);
    expect(store.get(newer.id)).toEqual(newer);
    // A second store over the same backend (a reload) sees the same.
    expect(new ConversationStore(backend).get(older.id)).toEqual(older);
  });

  it("updates in place rather than duplicating", () => {
    const conversation = chat("A", 100, ["one"]);
    store.save(conversation);
    store.save({ ...conversation, title: "Renamed", updatedAt: 300 });
    expect(store.list()).toEqual([{ id: conversation.id, title: "Renamed", updatedAt: 300 }]);
  });

  it("deletes", () => {
    const a = chat("A", 1, ["x"]);
    const b = chat("B", 2, ["y"]);
    store.save(a);
    store.save(b);
    store.delete(a.id);
    expect(store.get(a.id)).toBeNull();
    expect(store.list().map((s) => s.id)).toEqual([b.id]);
  });

  it("searches titles and message text, case-insensitively, all words", () => {
    store.save(chat("Rust lifetimes", 1, ["explain borrowing"]));
    store.save(chat("Dinner", 2, ["A recipe for Paella please", "Sure: rice, saffron"]));
    expect(store.search("paella").map((s) => s.title)).toEqual(["Dinner"]);
    expect(store.search("SAFFRON rice").map((s) => s.title)).toEqual(["Dinner"]);
    expect(store.search("rust").map((s) => s.title)).toEqual(["Rust lifetimes"]);
    expect(store.search("rust saffron")).toEqual([]);
    expect(store.search("  ")).toHaveLength(2);
  });

  it("skips a damaged entry instead of failing the list", () => {
    const good = chat("Good", 1, ["x"]);
    store.save(good);
    store.save(chat("Bad", 2, ["y"]));
    const badKey = [...backend.map.keys()].find((k) => k.startsWith("llamaedge.conversation.") && !k.endsWith(good.id))!;
    backend.map.set(badKey, "{not json");
    expect(store.list().map((s) => s.title)).toEqual(["Good"]);
  });

  it("exports and imports round trip, never overwriting existing chats", () => {
    const a = chat("A", 1, ["question", "answer"]);
    a.systemPrompt = "Be brief.";
    a.params = { temperature: 0.2, topP: 0.9, maxTokens: 64 };
    store.save(a);
    const exported = store.exportJson();

    const other = new ConversationStore(new MemoryStorage());
    expect(other.importJson(exported)).toBe(1);
    expect(other.get(a.id)).toEqual(a);

    // Importing into the store that already holds it adds a copy under a new id.
    expect(store.importJson(exported)).toBe(1);
    const all = store.list();
    expect(all).toHaveLength(2);
    expect(new Set(all.map((s) => s.id)).size).toBe(2);
    const copy = store.get(all.find((s) => s.id !== a.id)!.id)!;
    expect(copy.messages.map((m) => m.content)).toEqual(["question", "answer"]);
    expect(copy.systemPrompt).toBe("Be brief.");
  });

  it("imports a bare array and fills defaults for missing fields", () => {
    const count = store.importJson(
      JSON.stringify([{ id: "x1", messages: [{ role: "user", content: "Plan a trip to Lisbon\nin May" }] }]),
    );
    expect(count).toBe(1);
    const imported = store.get("x1")!;
    expect(imported.title).toBe("Plan a trip to Lisbon");
    expect(imported.params).toEqual({ temperature: 0.7, topP: 0.95, maxTokens: null });
  });

  it.each([
    ["not json", "{", /not JSON/],
    ["another format", JSON.stringify({ hello: 1 }), /not a llamaedge conversation export/],
    ["a bad role", JSON.stringify([{ id: "a", messages: [{ role: "tool", content: "x" }] }]), /Conversation 1: .*role tool/],
    ["no messages", JSON.stringify({ format: "llamaedge.conversations", conversations: [{ id: "a" }] }), /messages/],
  ])("refuses an import with %s, importing nothing", (_name, text, pattern) => {
    expect(() => store.importJson(text)).toThrow(pattern);
    expect(() => store.importJson(text)).toThrow(StorageError);
    expect(store.list()).toEqual([]);
  });

  it("says storage is full when the browser refuses a write", () => {
    const small = new ConversationStore(new MemoryStorage(200));
    expect(() => small.save(chat("Big", 1, ["x".repeat(500)]))).toThrow(/storage is full/);
  });

  it("keeps settings, with defaults for anything missing or invalid", () => {
    const defaults = { baseUrl: "", apiKey: "", theme: "system", showThinking: true };
    expect(store.loadSettings()).toEqual(defaults);
    const saved = { baseUrl: "http://127.0.0.1:9000", apiKey: "k", theme: "dark" as const, showThinking: false };
    store.saveSettings(saved);
    expect(store.loadSettings()).toEqual(saved);
    backend.map.set("llamaedge.settings", JSON.stringify({ theme: "purple", apiKey: 5, showThinking: "no" }));
    expect(store.loadSettings()).toEqual(defaults);
    // Settings saved before showThinking existed keep their values and show thinking.
    backend.map.set("llamaedge.settings", JSON.stringify({ baseUrl: "", apiKey: "", theme: "light" }));
    expect(store.loadSettings()).toEqual({ ...defaults, theme: "light" });
  });

  it("keeps a reply's reasoning and thinking time apart from its content", () => {
    const conversation = chat("Thinker", 1, ["why?"]);
    conversation.messages.push({
      id: "r",
      role: "assistant",
      content: "Because.",
      reasoning: "The user asks why.",
      thinkingMs: 1234,
      createdAt: 1,
    });
    store.save(conversation);
    const reply = store.get(conversation.id)!.messages[1];
    expect(reply.content).toBe("Because.");
    expect(reply.reasoning).toBe("The user asks why.");
    expect(reply.thinkingMs).toBe(1234);
    const imported = new ConversationStore(new MemoryStorage());
    imported.importJson(store.exportJson());
    expect(imported.list().map((s) => imported.get(s.id)!.messages[1].reasoning)).toEqual(["The user asks why."]);
  });
});

describe("stored replies with their <think> block inline", () => {
  it("are split on reading, so the reasoning is shown apart and not sent back", () => {
    const backend = new MemoryStorage();
    const store = new ConversationStore(backend);
    const imported = {
      format: "llamaedge.conversations",
      version: 1,
      conversations: [
        {
          id: "old",
          title: "Old",
          messages: [
            { role: "user", content: "hi" },
            { role: "assistant", content: "<think>\nThey greet me.\n</think>\n\nHello!" },
            { role: "assistant", content: "A literal </think> stays." },
          ],
        },
      ],
    };
    store.importJson(JSON.stringify(imported));
    const [, reply, other] = store.get("old")!.messages;
    expect(reply.content).toBe("Hello!");
    expect(reply.reasoning).toBe("They greet me.");
    expect(other.content).toBe("A literal </think> stays.");
    expect(other.reasoning).toBeUndefined();
  });
});

describe("titleFrom", () => {
  it("takes the first line, collapsing whitespace", () => {
    expect(titleFrom("  What is   WASI?\nMore detail")).toBe("What is WASI?");
  });

  it("cuts a long line at a word and marks the cut", () => {
    const title = titleFrom("Explain how the WebAssembly component model differs from WASI preview one in detail");
    expect(title.length).toBeLessThanOrEqual(61);
    expect(title.endsWith("…")).toBe(true);
    expect(title).toMatch(/^Explain how the WebAssembly component model differs from\S*…$/);
  });

  it("falls back for empty text", () => {
    expect(titleFrom(" \n ")).toBe("New chat");
  });
});
