/** The data the page keeps: conversations, their messages and settings. */

export interface ReplyStats {
  /** Tokens generated, from the usage chunk (or counted chunks when the server sends none). */
  completionTokens: number;
  /** Whether completionTokens came from the server's usage chunk rather than a chunk count. */
  exact: boolean;
  /** Time to first token, from sending the request. */
  ttftMs: number | null;
  /** Tokens per second over the generation (first token to last). */
  tokensPerSecond: number | null;
  finishReason: string | null;
}

export interface MessageError {
  kind: string;
  title: string;
  message: string;
  hint: string;
  retryable: boolean;
}

export interface Message {
  id: string;
  role: "user" | "assistant";
  /** The answer alone: what is shown as the reply and sent back in later requests. */
  content: string;
  /** A user message's images, as data URLs (for a model with `vision`; see request.ts). */
  images?: string[];
  /** A thinking model's reasoning: shown apart, kept here, never sent back. */
  reasoning?: string;
  /** How long the model thought, first token to first answer token. */
  thinkingMs?: number;
  createdAt: number;
  model?: string;
  stats?: ReplyStats;
  /** Set when the reply was stopped by the person before it finished. */
  stopped?: boolean;
  error?: MessageError;
}

export interface ChatParams {
  temperature: number;
  topP: number;
  /** null: let the server decide. */
  maxTokens: number | null;
}

export interface Conversation {
  id: string;
  title: string;
  /** Set once the person renames it, so the first message no longer decides the title. */
  titleEdited: boolean;
  createdAt: number;
  updatedAt: number;
  model: string;
  systemPrompt: string;
  params: ChatParams;
  messages: Message[];
}

export type Theme = "system" | "light" | "dark";

export interface Settings {
  baseUrl: string;
  apiKey: string;
  theme: Theme;
  /** Show a thinking model's reasoning above its answer. */
  showThinking: boolean;
}

export const DEFAULT_PARAMS: ChatParams = { temperature: 0.7, topP: 0.95, maxTokens: null };
export const DEFAULT_SETTINGS: Settings = { baseUrl: "", apiKey: "", theme: "system", showThinking: true };
