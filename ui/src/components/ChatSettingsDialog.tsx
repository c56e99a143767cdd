import { useState } from "preact/hooks";
import type { ChatParams } from "../types";
import { Dialog } from "./Dialog";

interface Props {
  systemPrompt: string;
  params: ChatParams;
  onSave: (systemPrompt: string, params: ChatParams) => void;
  onClose: () => void;
}

/** Per-conversation settings: the system prompt and the sampling parameters. */
export function ChatSettingsDialog({ systemPrompt, params, onSave, onClose }: Props) {
  const [prompt, setPrompt] = useState(systemPrompt);
  const [temperature, setTemperature] = useState(String(params.temperature));
  const [topP, setTopP] = useState(String(params.topP));
  const [maxTokens, setMaxTokens] = useState(params.maxTokens === null ? "" : String(params.maxTokens));
  const [error, setError] = useState<string | null>(null);

  const submit = (event: Event) => {
    event.preventDefault();
    const t = Number(temperature);
    const p = Number(topP);
    const m = maxTokens.trim() === "" ? null : Number(maxTokens);
    if (!Number.isFinite(t) || t < 0 || t > 2) return setError("Temperature must be between 0 and 2.");
    if (!Number.isFinite(p) || p <= 0 || p > 1) return setError("Top P must be above 0 and at most 1.");
    if (m !== null && (!Number.isInteger(m) || m < 1)) return setError("Max tokens must be a whole number above 0, or empty.");
    onSave(prompt, { temperature: t, topP: p, maxTokens: m });
  };

  return (
    <Dialog title="Chat settings" onClose={onClose}>
      <form class="form" onSubmit={submit} noValidate>
        <label>
          <span>System prompt</span>
          <textarea
            name="systemPrompt"
            rows={4}
            placeholder="You are a helpful assistant."
            value={prompt}
            onInput={(e) => setPrompt(e.currentTarget.value)}
          />
        </label>
        <div class="form-row">
          <label>
            <span>Temperature</span>
            <input
              type="number"
              name="temperature"
              min="0"
              max="2"
              step="0.05"
              value={temperature}
              onInput={(e) => setTemperature(e.currentTarget.value)}
            />
          </label>
          <label>
            <span>Top P</span>
            <input
              type="number"
              name="topP"
              min="0"
              max="1"
              step="0.05"
              value={topP}
              onInput={(e) => setTopP(e.currentTarget.value)}
            />
          </label>
          <label>
            <span>Max tokens</span>
            <input
              type="number"
              name="maxTokens"
              min="1"
              step="1"
              placeholder="Server default"
              value={maxTokens}
              onInput={(e) => setMaxTokens(e.currentTarget.value)}
            />
          </label>
        </div>
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <div class="form-actions">
          <button type="button" class="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="button primary">
            Save
          </button>
        </div>
      </form>
    </Dialog>
  );
}
