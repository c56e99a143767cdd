import { useEffect, useRef, useState } from "preact/hooks";
import type { ConversationSummary } from "../storage";
import { CloseIcon, PencilIcon, PlusIcon, TrashIcon } from "./icons";
import type { Theme } from "../types";

interface Props {
  open: boolean;
  summaries: ConversationSummary[];
  currentId: string;
  query: string;
  theme: Theme;
  notice: string | null;
  onQuery: (query: string) => void;
  onNew: () => void;
  onSelect: (id: string) => void;
  onRename: (id: string, title: string) => void;
  onDelete: (id: string) => void;
  onExport: () => void;
  onImport: (file: File) => void;
  onTheme: (theme: Theme) => void;
  onSettings: () => void;
  onClose: () => void;
}

export function Sidebar(props: Props) {
  const [renaming, setRenaming] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  return (
    <>
      <div class={`scrim${props.open ? " open" : ""}`} onClick={props.onClose} aria-hidden="true" />
      <aside class={`sidebar${props.open ? " open" : ""}`} aria-label="Conversations">
        <div class="sidebar-top">
          <button type="button" class="button new-chat" onClick={props.onNew}>
            <PlusIcon /> New chat
          </button>
          <button type="button" class="icon-button close-sidebar" aria-label="Close sidebar" onClick={props.onClose}>
            <CloseIcon />
          </button>
        </div>
        <label class="search">
          <span class="sr-only">Search conversations</span>
          <input
            type="search"
            placeholder="Search chats"
            value={props.query}
            onInput={(e) => props.onQuery(e.currentTarget.value)}
          />
        </label>
        <nav class="history" aria-label="Chat history">
          {props.summaries.length === 0 && (
            <p class="muted history-empty">{props.query ? "No chat matches." : "No chats yet."}</p>
          )}
          <ul>
            {props.summaries.map((summary) => (
              <li key={summary.id} class={summary.id === props.currentId ? "active" : ""}>
                {renaming === summary.id ? (
                  <RenameField
                    title={summary.title}
                    onDone={(title) => {
                      setRenaming(null);
                      if (title !== null) props.onRename(summary.id, title);
                    }}
                  />
                ) : (
                  <>
                    <button
                      type="button"
                      class="history-item"
                      aria-current={summary.id === props.currentId ? "page" : undefined}
                      onClick={() => props.onSelect(summary.id)}
                      title={summary.title}
                    >
                      {summary.title}
                    </button>
                    <span class="history-actions">
                      <button
                        type="button"
                        class="icon-button"
                        aria-label={`Rename “${summary.title}”`}
                        title="Rename"
                        onClick={() => setRenaming(summary.id)}
                      >
                        <PencilIcon />
                      </button>
                      <button
                        type="button"
                        class="icon-button"
                        aria-label={`Delete “${summary.title}”`}
                        title="Delete"
                        onClick={() => props.onDelete(summary.id)}
                      >
                        <TrashIcon />
                      </button>
                    </span>
                  </>
                )}
              </li>
            ))}
          </ul>
        </nav>
        <div class="sidebar-bottom">
          {props.notice && (
            <p class="notice" role="status">
              {props.notice}
            </p>
          )}
          <div class="sidebar-row">
            <button type="button" class="button small" onClick={props.onExport}>
              Export
            </button>
            <button type="button" class="button small" onClick={() => fileInput.current?.click()}>
              Import
            </button>
            <input
              ref={fileInput}
              type="file"
              accept="application/json,.json"
              class="sr-only"
              tabIndex={-1}
              aria-label="Import conversations from a JSON file"
              onChange={(e) => {
                const file = e.currentTarget.files?.[0];
                e.currentTarget.value = "";
                if (file) props.onImport(file);
              }}
            />
          </div>
          <div class="sidebar-row">
            <label class="theme-select">
              <span>Theme</span>
              <select value={props.theme} onChange={(e) => props.onTheme(e.currentTarget.value as Theme)}>
                <option value="system">System</option>
                <option value="light">Light</option>
                <option value="dark">Dark</option>
              </select>
            </label>
            <button type="button" class="button small" onClick={props.onSettings}>
              Settings
            </button>
          </div>
        </div>
      </aside>
    </>
  );
}

function RenameField({ title, onDone }: { title: string; onDone: (title: string | null) => void }) {
  const [value, setValue] = useState(title);
  // Enter, Escape and blur can all end the edit, and unmounting the field blurs it: act once.
  const finished = useRef(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => {
    input.current?.focus();
    input.current?.select();
  }, []);
  const finish = (result: string | null) => {
    if (finished.current) return;
    finished.current = true;
    onDone(result);
  };
  return (
    <form
      class="rename"
      onSubmit={(e) => {
        e.preventDefault();
        finish(value.trim() || null);
      }}
    >
      <input
        aria-label="New title"
        value={value}
        ref={input}
        onInput={(e) => setValue(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === "Escape") finish(null);
        }}
        onBlur={() => finish(value.trim() || null)}
      />
    </form>
  );
}
