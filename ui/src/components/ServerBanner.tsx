import type { ApiError } from "../errors";

export type ServerState = { state: "checking" } | { state: "ready" } | { state: "error"; error: ApiError };

/** Why the server cannot be used now, with a retry; nothing while it can. */
export function ServerBanner({ server, onRetry }: { server: ServerState; onRetry: () => void }) {
  if (server.state !== "error") return null;
  const { error } = server;
  return (
    <div class={`banner ${error.kind}`} role="alert">
      <div>
        <strong>{error.title}.</strong> {error.message} <span class="muted">{error.hint}</span>
      </div>
      <button type="button" class="button small" onClick={onRetry}>
        Retry
      </button>
    </div>
  );
}
