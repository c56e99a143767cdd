import type { LibraryAction } from "../api";
import { canChat, formatBytes, grouped, percent, type ModelInfo } from "../library";
import { Dialog } from "./Dialog";

interface Props {
  models: ModelInfo[];
  /** The model of the chat on screen. */
  current: string;
  /** An action the server refused, to show in the dialog. */
  error: string | null;
  onAction: (action: LibraryAction, model: string) => void;
  onUse: (model: string) => void;
  onClose: () => void;
}

const STATE_TEXT: Record<ModelInfo["state"], string> = {
  loaded: "Loaded",
  loading: "Loading…",
  unloaded: "On disk",
  downloading: "Downloading",
  failed: "Failed",
};

/** The server's library: loaded models first, then downloaded, then downloadable, each with
 * what it can do, its size and whether it fits; download (with progress and cancel), load,
 * unload, and use in this chat. */
export function ModelsDialog({ models, current, error, onAction, onUse, onClose }: Props) {
  return (
    <Dialog title="Models" onClose={onClose}>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {models.length === 0 && <p class="muted">The server offers no models.</p>}
      <div class="library">
        {grouped(models).map(({ section, models: members }) => (
          <section key={section} class="library-section" aria-label={section}>
            <h3>{section}</h3>
            <ul>
              {members.map((model) => (
                <ModelRow
                  key={model.id}
                  model={model}
                  current={model.id === current}
                  onAction={onAction}
                  onUse={onUse}
                />
              ))}
            </ul>
          </section>
        ))}
      </div>
    </Dialog>
  );
}

function ModelRow({
  model,
  current,
  onAction,
  onUse,
}: {
  model: ModelInfo;
  current: boolean;
  onAction: (action: LibraryAction, model: string) => void;
  onUse: (model: string) => void;
}) {
  const size = formatBytes(model.sizeBytes);
  const chat = canChat(model);
  const pct = percent(model.progress);
  return (
    <li class={`library-model state-${model.state}`} data-model={model.id} aria-label={model.id}>
      <div class="library-line">
        <span class="library-name">{model.id}</span>
        {current && <span class="chip current">This chat</span>}
        <span class="library-state">{model.downloaded || model.state === "downloading" ? STATE_TEXT[model.state] : "Not downloaded"}</span>
      </div>
      <div class="library-meta">
        {model.capabilities.map((cap) => (
          <span key={cap} class="chip">
            {cap}
          </span>
        ))}
        {size && <span class="muted">{size}</span>}
        {model.fits === false && <span class="chip warn">too large for this machine</span>}
      </div>
      {model.state === "downloading" && (
        <div class="library-progress">
          <progress max={100} value={pct ?? undefined} aria-label={`Downloading ${model.id}`} />
          <span class="muted">
            {pct === null ? "" : `${pct}%`} {model.progress ? `${formatBytes(model.progress.done)} of ${formatBytes(model.progress.total)}` : ""}
          </span>
        </div>
      )}
      {model.state === "failed" && model.reason && <p class="form-error">{model.reason}</p>}
      <div class="library-actions">
        {!model.downloaded && model.state !== "downloading" && (
          <button type="button" class="button small" onClick={() => onAction("pull", model.id)}>
            Download
          </button>
        )}
        {model.state === "downloading" && (
          <button type="button" class="button small" onClick={() => onAction("unload", model.id)}>
            Cancel
          </button>
        )}
        {model.downloaded && model.state !== "downloading" && chat && !current && (
          <button type="button" class="button small" onClick={() => onUse(model.id)}>
            Use in this chat
          </button>
        )}
        {model.downloaded && (model.state === "unloaded" || model.state === "failed") && (
          <button type="button" class="button small" onClick={() => onAction("load", model.id)}>
            Load
          </button>
        )}
        {model.state === "loaded" && (
          <button type="button" class="button small" onClick={() => onAction("unload", model.id)}>
            Unload
          </button>
        )}
      </div>
    </li>
  );
}
