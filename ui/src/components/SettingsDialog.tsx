import { useState } from "preact/hooks";
import type { Settings, Theme } from "../types";
import { Dialog } from "./Dialog";

interface Props {
  settings: Settings;
  onSave: (settings: Settings) => void;
  onClose: () => void;
}

/** Page settings: where the OpenAI-compatible API is and its key, the theme, thinking shown. */
export function SettingsDialog({ settings, onSave, onClose }: Props) {
  const [baseUrl, setBaseUrl] = useState(settings.baseUrl);
  const [apiKey, setApiKey] = useState(settings.apiKey);
  const [theme, setTheme] = useState<Theme>(settings.theme);
  const [showThinking, setShowThinking] = useState(settings.showThinking);
  return (
    <Dialog title="Settings" onClose={onClose}>
      <form
        class="form"
        onSubmit={(event) => {
          event.preventDefault();
          onSave({ baseUrl: baseUrl.trim(), apiKey: apiKey.trim(), theme, showThinking });
        }}
      >
        <label>
          <span>Server URL</span>
          <input
            type="url"
            name="baseUrl"
            placeholder="Same origin (this server)"
            value={baseUrl}
            onInput={(e) => setBaseUrl(e.currentTarget.value)}
          />
          <small>Any OpenAI-compatible API, e.g. http://127.0.0.1:8080. Leave empty for this server.</small>
        </label>
        <label>
          <span>API key</span>
          <input
            type="password"
            name="apiKey"
            autocomplete="off"
            placeholder="None"
            value={apiKey}
            onInput={(e) => setApiKey(e.currentTarget.value)}
          />
          <small>Sent as a Bearer token; kept in this browser only.</small>
        </label>
        <label>
          <span>Theme</span>
          <select name="theme" value={theme} onChange={(e) => setTheme(e.currentTarget.value as Theme)}>
            <option value="system">System</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
        </label>
        <label class="check">
          <input
            type="checkbox"
            name="showThinking"
            checked={showThinking}
            onChange={(e) => setShowThinking(e.currentTarget.checked)}
          />
          <span>Show thinking</span>
          <small>A thinking model's reasoning, in a folding block above its answer.</small>
        </label>
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
