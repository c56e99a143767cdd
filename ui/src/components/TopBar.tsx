import { grouped, type ModelInfo } from "../library";
import { MenuIcon } from "./icons";

interface Props {
  sidebarOpen: boolean;
  /** The conversation's model ("" when there is none to pick). */
  model: string;
  /** The models the chat can pick. */
  pickable: ModelInfo[];
  title: string;
  onOpenSidebar: () => void;
  onModel: (id: string) => void;
  onModels: () => void;
  onChatSettings: () => void;
}

/** The bar above the chat: the sidebar's button, the model picker, the Models dialog, the title,
 * the chat's settings. */
export function TopBar({ sidebarOpen, model, pickable, title, onOpenSidebar, onModel, onModels, onChatSettings }: Props) {
  return (
    <header class="topbar">
      <button
        type="button"
        class="icon-button menu"
        aria-label="Open sidebar"
        aria-expanded={sidebarOpen}
        onClick={onOpenSidebar}
      >
        <MenuIcon />
      </button>
      <label class="model-picker">
        <span class="sr-only">Model</span>
        <select
          value={model}
          disabled={pickable.length === 0}
          onChange={(e) => onModel(e.currentTarget.value)}
        >
          {pickable.length === 0 && <option value="">No model</option>}
          {grouped(pickable).map(({ section, models: members }) => (
            <optgroup key={section} label={section}>
              {members.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id}
                </option>
              ))}
            </optgroup>
          ))}
        </select>
      </label>
      <button
        type="button"
        class="button small library-button"
        aria-label="Models"
        title="The server's models: load, unload, download"
        onClick={onModels}
      >
        Models
      </button>
      <h1 class="chat-title">{title}</h1>
      <button type="button" class="button small" onClick={onChatSettings}>
        Chat settings
      </button>
    </header>
  );
}
