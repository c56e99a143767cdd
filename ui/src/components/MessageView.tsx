import { useId, useMemo, useState } from "preact/hooks";
import { copyText } from "../clipboard";
import { renderMarkdown } from "../markdown";
import { formatStats } from "../stats";
import { formatThought } from "../thinking";
import { ChevronIcon } from "./icons";
import type { Message } from "../types";

interface Props {
  message: Message;
  streaming: boolean;
  canRegenerate: boolean;
  busy: boolean;
  showThinking: boolean;
  /** The model the server is loading for this reply, shown until the first token. */
  loadingModel?: string | null;
  onEdit: (id: string, content: string) => void;
  onRegenerate: () => void;
  onRetry: () => void;
}

export function MessageView({
  message,
  streaming,
  canRegenerate,
  busy,
  showThinking,
  loadingModel = null,
  onEdit,
  onRegenerate,
  onRetry,
}: Props) {
  const [editing, setEditing] = useState(false);
  const [copied, setCopied] = useState(false);
  const html = useMemo(
    () => (message.role === "assistant" ? renderMarkdown(message.content) : ""),
    [message.role, message.content],
  );

  const copyMessage = async () => {
    if (await copyText(message.content)) {
      setCopied(true);
      window.setTimeout(() => setCopied(false), 1500);
    }
  };

  // Code-block copy buttons come from rendered Markdown, so one listener here serves them all.
  const onMarkdownClick = async (event: MouseEvent) => {
    const button = (event.target as HTMLElement).closest("button.copy-code");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("code");
    if (code && (await copyText(code.textContent ?? ""))) {
      button.textContent = "Copied";
      window.setTimeout(() => (button.textContent = "Copy"), 1500);
    }
  };

  const label = message.role === "user" ? "You" : "Assistant";
  return (
    <article
      class={`message ${message.role}${streaming ? " streaming" : ""}`}
      aria-label={`${label} message`}
      aria-busy={streaming ? "true" : undefined}
      data-role={message.role}
    >
      <div class="message-inner">
        <div class="avatar" aria-hidden="true">
          {message.role === "user" ? "You" : "AI"}
        </div>
        <div class="message-main">
          {editing ? (
            <EditForm
              initial={message.content}
              onCancel={() => setEditing(false)}
              onSubmit={(text) => {
                setEditing(false);
                onEdit(message.id, text);
              }}
            />
          ) : message.role === "user" ? (
            <>
              {message.images && message.images.length > 0 && (
                <ul class="attachments" aria-label="Images">
                  {message.images.map((url, i) => (
                    <li key={i}>
                      <img src={url} alt={`Image ${i + 1}`} class="thumbnail" />
                    </li>
                  ))}
                </ul>
              )}
              <div class="user-text">{message.content}</div>
            </>
          ) : (
            <>
              {showThinking && message.reasoning && (
                <Thinking
                  reasoning={message.reasoning}
                  thinkingMs={message.thinkingMs}
                  thinking={streaming && message.content === ""}
                  onClick={onMarkdownClick}
                />
              )}
              <div
                class="markdown prose"
                onClick={onMarkdownClick}
                // Safe: renderMarkdown escapes raw HTML and sanitizes its output with DOMPurify.
                dangerouslySetInnerHTML={{ __html: html }}
              />
            </>
          )}
          {streaming && loadingModel && message.content === "" && !message.reasoning && (
            <p class="muted loading-model" role="status">
              Loading {loadingModel}…
            </p>
          )}
          {streaming && message.content === "" && !(showThinking && message.reasoning) && (
            <div class="typing" aria-label="Waiting for the reply">
              <span />
              <span />
              <span />
            </div>
          )}
          {message.stopped && <p class="muted stopped">Stopped.</p>}
          {message.error && (
            <div class="error-box" role="alert">
              <strong>{message.error.title}</strong>
              <p>{message.error.message}</p>
              <p class="muted">{message.error.hint}</p>
              {message.error.retryable && (
                <button type="button" class="button small" onClick={onRetry} disabled={busy}>
                  Retry
                </button>
              )}
            </div>
          )}
          {!editing && !streaming && (
            <div class="message-actions">
              {message.content !== "" && (
                <button type="button" class="action" onClick={copyMessage} aria-label="Copy message">
                  {copied ? "Copied" : "Copy"}
                </button>
              )}
              {message.role === "user" && (
                <button
                  type="button"
                  class="action"
                  onClick={() => setEditing(true)}
                  disabled={busy}
                  aria-label="Edit message"
                >
                  Edit
                </button>
              )}
              {canRegenerate && (
                <button
                  type="button"
                  class="action"
                  onClick={onRegenerate}
                  disabled={busy}
                  aria-label="Regenerate reply"
                >
                  Regenerate
                </button>
              )}
              {message.stats && (
                <span class="stats" aria-label="Reply statistics">
                  {formatStats(message.stats).map((part) => (
                    <span key={part}>{part}</span>
                  ))}
                </span>
              )}
            </div>
          )}
        </div>
      </div>
    </article>
  );
}

/**
 * A thinking model's reasoning: open while it streams, folded once the answer begins (or
 * as the person last left it).
 */
function Thinking({
  reasoning,
  thinkingMs,
  thinking,
  onClick,
}: {
  reasoning: string;
  thinkingMs?: number;
  thinking: boolean;
  onClick: (event: MouseEvent) => void;
}) {
  const [chosen, setChosen] = useState<boolean | null>(null);
  const open = chosen ?? thinking;
  const html = useMemo(() => (open ? renderMarkdown(reasoning) : ""), [open, reasoning]);
  const id = useId();
  const label = thinking ? "Thinking…" : thinkingMs !== undefined ? formatThought(thinkingMs) : "Thoughts";
  return (
    <div class={`thinking${thinking ? " active" : ""}`}>
      <button
        type="button"
        class="thinking-toggle"
        aria-expanded={open}
        aria-controls={open ? id : undefined}
        onClick={() => setChosen(!open)}
      >
        <ChevronIcon />
        <span>{label}</span>
      </button>
      {open && (
        <div
          id={id}
          class="thinking-body prose"
          onClick={onClick}
          // Safe: renderMarkdown escapes raw HTML and sanitizes its output with DOMPurify.
          dangerouslySetInnerHTML={{ __html: html }}
        />
      )}
    </div>
  );
}

function EditForm({
  initial,
  onSubmit,
  onCancel,
}: {
  initial: string;
  onSubmit: (text: string) => void;
  onCancel: () => void;
}) {
  const [text, setText] = useState(initial);
  return (
    <form
      class="edit-form"
      onSubmit={(e) => {
        e.preventDefault();
        if (text.trim()) onSubmit(text);
      }}
    >
      <textarea
        aria-label="Edit message"
        rows={Math.min(12, Math.max(2, text.split("\n").length))}
        value={text}
        onInput={(e) => setText(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === "Escape") onCancel();
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            if (text.trim()) onSubmit(text);
          }
        }}
      />
      <div class="form-actions">
        <button type="button" class="button small" onClick={onCancel}>
          Cancel
        </button>
        <button type="submit" class="button small primary" disabled={!text.trim()}>
          Save &amp; send
        </button>
      </div>
    </form>
  );
}
