/**
 * Conversations and settings kept in the browser. Each conversation is one localStorage entry
 * (so saving during a streamed reply rewrites one small value, not the whole history), and an
 * index entry lists the ids. The key-value backend is injected so tests can use a Map.
 */

import {
  DEFAULT_PARAMS,
  DEFAULT_SETTINGS,
  type ChatParams,
  type Conversation,
  type Message,
  type Settings,
  type Theme,
} from "./types";
import { splitStored } from "./thinking";

/** The part of the Web Storage API this module uses. */
export interface KeyValue {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageError";
  }
}

const PREFIX = "llamaedge.";
const INDEX_KEY = `${PREFIX}conversations`;
const SETTINGS_KEY = `${PREFIX}settings`;
const EXPORT_FORMAT = "llamaedge.conversations";
const TITLE_CHARS_MAX = 60;

export interface ConversationSummary {
  id: string;
  title: string;
  updatedAt: number;
}

export function newId(): string {
  if (typeof crypto !== "undefined" && "randomUUID" in crypto) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** A title from the first user message: its first line, whitespace collapsed, cut at a word. */
export function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ").trim();
  if (!line) return "New chat";
  if (line.length <= TITLE_CHARS_MAX) return line;
  const cut = line.slice(0, TITLE_CHARS_MAX);
  const space = cut.lastIndexOf(" ");
  return `${(space > TITLE_CHARS_MAX / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

export function newConversation(model = "", now = Date.now()): Conversation {
  return {
    id: newId(),
    title: "New chat",
    titleEdited: false,
    createdAt: now,
    updatedAt: now,
    model,
    systemPrompt: "",
    params: { ...DEFAULT_PARAMS },
    messages: [],
  };
}

export class ConversationStore {
  constructor(private readonly backend: KeyValue) {}

  /** Summaries, most recently updated first. */
  list(): ConversationSummary[] {
    const summaries: ConversationSummary[] = [];
    for (const id of this.ids()) {
      const conversation = this.get(id);
      if (conversation) summaries.push({ id, title: conversation.title, updatedAt: conversation.updatedAt });
    }
    return summaries.sort((a, b) => b.updatedAt - a.updatedAt);
  }

  get(id: string): Conversation | null {
    const raw = this.backend.getItem(conversationKey(id));
    if (raw === null) return null;
    try {
      return parseConversation(JSON.parse(raw));
    } catch {
      return null; // a damaged entry is skipped rather than breaking the whole list
    }
  }

  save(conversation: Conversation): void {
    this.write(conversationKey(conversation.id), JSON.stringify(conversation));
    const ids = this.ids();
    if (!ids.includes(conversation.id)) this.write(INDEX_KEY, JSON.stringify([...ids, conversation.id]));
  }

  delete(id: string): void {
    this.backend.removeItem(conversationKey(id));
    this.backend.setItem(INDEX_KEY, JSON.stringify(this.ids().filter((other) => other !== id)));
  }

  /** Conversations whose title or any message contains every word of the query (case-insensitive). */
  search(query: string): ConversationSummary[] {
    const words = query.toLowerCase().split(/\s+/).filter(Boolean);
    if (words.length === 0) return this.list();
    return this.list().filter((summary) => {
      const conversation = this.get(summary.id);
      if (!conversation) return false;
      const haystack = [conversation.title, ...conversation.messages.map((m) => m.content)].join("\n").toLowerCase();
      return words.every((word) => haystack.includes(word));
    });
  }

  exportJson(): string {
    const conversations = this.list()
      .map((summary) => this.get(summary.id))
      .filter((c): c is Conversation => c !== null);
    return JSON.stringify({ format: EXPORT_FORMAT, version: 1, conversations }, null, 2);
  }

  /**
   * Import conversations exported by exportJson (or a bare array of them). An imported
   * conversation whose id exists already gets a new id, so importing never overwrites.
   * Returns how many were imported; throws StorageError saying what is wrong with the file.
   */
  importJson(text: string): number {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new StorageError("The file is not JSON.");
    }
    let items: unknown;
    if (Array.isArray(value)) {
      items = value;
    } else if (typeof value === "object" && value !== null && (value as { format?: unknown }).format === EXPORT_FORMAT) {
      items = (value as { conversations?: unknown }).conversations;
    } else {
      throw new StorageError("The file is not a llamaedge conversation export.");
    }
    if (!Array.isArray(items)) throw new StorageError("The export has no list of conversations.");
    const parsed = items.map((item, index) => {
      try {
        return parseConversation(item);
      } catch (error) {
        throw new StorageError(`Conversation ${index + 1}: ${(error as Error).message}`);
      }
    });
    const existing = new Set(this.ids());
    for (const conversation of parsed) {
      if (existing.has(conversation.id)) conversation.id = newId();
      existing.add(conversation.id);
      this.save(conversation);
    }
    return parsed.length;
  }

  loadSettings(): Settings {
    const raw = this.backend.getItem(SETTINGS_KEY);
    if (raw === null) return { ...DEFAULT_SETTINGS };
    try {
      const value = JSON.parse(raw) as Partial<Settings>;
      return {
        baseUrl: typeof value.baseUrl === "string" ? value.baseUrl : DEFAULT_SETTINGS.baseUrl,
        apiKey: typeof value.apiKey === "string" ? value.apiKey : DEFAULT_SETTINGS.apiKey,
        theme: isTheme(value.theme) ? value.theme : DEFAULT_SETTINGS.theme,
        showThinking: typeof value.showThinking === "boolean" ? value.showThinking : DEFAULT_SETTINGS.showThinking,
      };
    } catch {
      return { ...DEFAULT_SETTINGS };
    }
  }

  saveSettings(settings: Settings): void {
    this.write(SETTINGS_KEY, JSON.stringify(settings));
  }

  private ids(): string[] {
    const raw = this.backend.getItem(INDEX_KEY);
    if (raw === null) return [];
    try {
      const value = JSON.parse(raw);
      return Array.isArray(value) ? value.filter((id): id is string => typeof id === "string") : [];
    } catch {
      return [];
    }
  }

  private write(key: string, value: string): void {
    try {
      this.backend.setItem(key, value);
    } catch (error) {
      // Browsers throw a QuotaExceededError DOMException when the origin's storage is full.
      throw new StorageError(
        `Could not save (${(error as Error).name || "error"}): browser storage is full. Export and delete old chats.`,
      );
    }
  }
}

function conversationKey(id: string): string {
  return `${PREFIX}conversation.${id}`;
}

function isTheme(value: unknown): value is Theme {
  return value === "system" || value === "light" || value === "dark";
}

function need<T>(ok: boolean, value: T, what: string): T {
  if (!ok) throw new Error(`${what} is missing or of the wrong type.`);
  return value;
}

/** Check a stored or imported value and fill defaults for optional fields. Throws on bad shape. */
export function parseConversation(value: unknown): Conversation {
  if (typeof value !== "object" || value === null) throw new Error("not an object");
  const v = value as Record<string, unknown>;
  const id = need(typeof v.id === "string" && v.id.length > 0, v.id as string, "id");
  const messagesRaw = need(Array.isArray(v.messages), v.messages as unknown[], "messages");
  const messages = messagesRaw.map((m, index) => parseMessage(m, index));
  const now = Date.now();
  const params = (typeof v.params === "object" && v.params !== null ? v.params : {}) as Partial<ChatParams>;
  return {
    id,
    title: typeof v.title === "string" && v.title ? v.title : titleFrom(messages[0]?.content ?? ""),
    titleEdited: v.titleEdited === true,
    createdAt: typeof v.createdAt === "number" ? v.createdAt : now,
    updatedAt: typeof v.updatedAt === "number" ? v.updatedAt : now,
    model: typeof v.model === "string" ? v.model : "",
    systemPrompt: typeof v.systemPrompt === "string" ? v.systemPrompt : "",
    params: {
      temperature: typeof params.temperature === "number" ? params.temperature : DEFAULT_PARAMS.temperature,
      topP: typeof params.topP === "number" ? params.topP : DEFAULT_PARAMS.topP,
      maxTokens: typeof params.maxTokens === "number" ? params.maxTokens : null,
    },
    messages,
  };
}

function parseMessage(value: unknown, index: number): Message {
  if (typeof value !== "object" || value === null) throw new Error(`message ${index + 1} is not an object`);
  const v = value as Record<string, unknown>;
  if (v.role !== "user" && v.role !== "assistant") throw new Error(`message ${index + 1} has role ${String(v.role)}`);
  if (typeof v.content !== "string") throw new Error(`message ${index + 1} has no text content`);
  const message: Message = {
    id: typeof v.id === "string" && v.id ? v.id : newId(),
    role: v.role,
    content: v.content,
    createdAt: typeof v.createdAt === "number" ? v.createdAt : Date.now(),
  };
  if (typeof v.model === "string") message.model = v.model;
  if (typeof v.reasoning === "string" && v.reasoning) message.reasoning = v.reasoning;
  const split = message.role === "assistant" && !message.reasoning ? splitStored(message.content) : null;
  if (split) {
    message.content = split.content;
    if (split.reasoning) message.reasoning = split.reasoning;
  }
  if (typeof v.thinkingMs === "number" && v.thinkingMs >= 0) message.thinkingMs = v.thinkingMs;
  if (typeof v.stats === "object" && v.stats !== null) message.stats = v.stats as Message["stats"];
  if (v.stopped === true) message.stopped = true;
  if (typeof v.error === "object" && v.error !== null) message.error = v.error as Message["error"];
  return message;
}
