/** Errors the page shows to a person: each says what happened and what to do about it. */

import type { MessageError } from "./types";

export type ApiErrorKind =
  | "unreachable" // no HTTP answer at all
  | "loading" // 503 or 429: the model is not loaded yet, or the server is busy
  | "context" // the conversation no longer fits the model's context
  | "auth" // 401: missing or wrong API key
  | "not_found" // 404: unknown model or route
  | "bad_request" // other 4xx
  | "server" // 5xx, or an error event in the middle of a stream
  | "protocol"; // the server answered something that is not the OpenAI API

export class ApiError extends Error {
  readonly kind: ApiErrorKind;
  readonly status: number | null;
  readonly code: string | null;

  constructor(kind: ApiErrorKind, message: string, status: number | null = null, code: string | null = null) {
    super(message);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.code = code;
  }

  /** Whether trying the same request again later can succeed without the person changing anything. */
  get retryable(): boolean {
    return this.kind === "unreachable" || this.kind === "loading" || this.kind === "server";
  }

  /** A short heading for the error banner. */
  get title(): string {
    switch (this.kind) {
      case "unreachable":
        return "Server unreachable";
      case "loading":
        return "Model not ready";
      case "context":
        return "Conversation too long";
      case "auth":
        return "API key needed";
      case "not_found":
        return "Not found";
      case "bad_request":
        return "Request refused";
      case "server":
        return "Server error";
      case "protocol":
        return "Unexpected answer";
    }
  }

  /** What the person can do about it. */
  get hint(): string {
    switch (this.kind) {
      case "unreachable":
        return "Check that llamaedge serve is running and that the server URL in Settings is right, then retry.";
      case "loading":
        return "It is probably still loading; the page keeps checking.";
      case "context":
        return "Start a new chat, delete earlier messages or lower Max tokens in the chat settings.";
      case "auth":
        return "Enter the server's API key in Settings.";
      case "not_found":
        return "Pick another model, or check the server URL in Settings.";
      case "bad_request":
        return "Check the chat settings (temperature, top_p, max tokens).";
      case "server":
        return "Retry; if it persists, see the server log.";
      case "protocol":
        return "Check that the server URL in Settings points to an OpenAI-compatible API.";
    }
  }
}

interface OpenAIErrorBody {
  message?: unknown;
  type?: unknown;
  code?: unknown;
}

/** The `error` object of an OpenAI error body, if `value` is one. */
export function openAIError(value: unknown): OpenAIErrorBody | null {
  if (typeof value !== "object" || value === null) return null;
  const error = (value as { error?: unknown }).error;
  if (typeof error === "object" && error !== null) return error as OpenAIErrorBody;
  if (typeof error === "string") return { message: error };
  return null;
}

/** Classify an OpenAI-style error (from an HTTP status, a body, or both). */
export function errorFrom(status: number | null, body: unknown): ApiError {
  const error = openAIError(body);
  const message = typeof error?.message === "string" && error.message ? error.message : defaultMessage(status);
  const code = typeof error?.code === "string" ? error.code : null;
  const type = typeof error?.type === "string" ? error.type : null;
  if (code === "context_length_exceeded" || /context (length|window|size)|too long/i.test(message)) {
    return new ApiError("context", message, status, code);
  }
  if (status === 401 || status === 403 || type === "authentication_error") return new ApiError("auth", message, status, code);
  if (status === 503 || status === 429) return new ApiError("loading", message, status, code);
  if (status === 404) return new ApiError("not_found", message, status, code);
  if (status !== null && status >= 400 && status < 500) return new ApiError("bad_request", message, status, code);
  return new ApiError("server", message, status, code);
}

function defaultMessage(status: number | null): string {
  if (status === null) return "The server reported an error.";
  return `The server answered HTTP ${status}.`;
}

/** An error as a message keeps it: what the conversation stores and shows. */
export function toMessageError(error: unknown): MessageError {
  const apiError =
    error instanceof ApiError ? error : new ApiError("server", error instanceof Error ? error.message : String(error));
  return {
    kind: apiError.kind,
    title: apiError.title,
    message: apiError.message,
    hint: apiError.hint,
    retryable: apiError.retryable,
  };
}

/** Whether `error` is a fetch or stream stopped by its AbortController. */
export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}
