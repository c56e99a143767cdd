import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { libraryAction, streamChat, type Connection, type LibraryAction } from "./api";
import { ChatSettingsDialog } from "./components/ChatSettingsDialog";
import { Composer } from "./components/Composer";
import { MessageView } from "./components/MessageView";
import { ModelsDialog } from "./components/ModelsDialog";
import { ServerBanner } from "./components/ServerBanner";
import { SettingsDialog } from "./components/SettingsDialog";
import { Sidebar } from "./components/Sidebar";
import { TopBar } from "./components/TopBar";
import { isAbort, toMessageError } from "./errors";
import { canPick, grouped } from "./library";
import { chatRequest } from "./request";
import { ReplyMeter } from "./stats";
import { ReplyParts } from "./thinking";
import { ConversationStore, newConversation, newId, StorageError, titleFrom } from "./storage";
import { applyTheme } from "./theme";
import type { Conversation, Message, MessageError, Settings, Theme } from "./types";
import { useServerModels } from "./useServerModels";

interface Props {
  store: ConversationStore;
}

const SAVE_DURING_STREAM_MS = 500;

/** The conversation named in the URL fragment (`#<id>`), so a reload reopens it. */
function idFromHash(): string {
  return decodeURIComponent(window.location.hash.replace(/^#/, ""));
}

export function App({ store }: Props) {
  const [settings, setSettings] = useState<Settings>(() => store.loadSettings());
  const [summaries, setSummaries] = useState(() => store.list());
  const [query, setQuery] = useState("");
  const [conversation, setConversation] = useState<Conversation>(
    () => store.get(idFromHash()) ?? newConversation(),
  );
  const [streamingId, setStreamingId] = useState<string | null>(null);
  const [sidebarOpen, setSidebarOpen] = useState(false);
  const [dialog, setDialog] = useState<"settings" | "chat" | "models" | null>(null);
  const [libraryError, setLibraryError] = useState<string | null>(null);
  /** The model a reply waits for while the server loads it, until its first token. */
  const [loadingModel, setLoadingModel] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const [announcement, setAnnouncement] = useState("");

  const abortRef = useRef<AbortController | null>(null);
  /** The conversation a reply is streaming into. Changes made while it streams (rename,
   * settings, delete) are applied here too, so the end of the reply does not undo them. */
  const liveRef = useRef<Conversation | null>(null);
  const currentIdRef = useRef(conversation.id);
  currentIdRef.current = conversation.id;
  const threadRef = useRef<HTMLDivElement>(null);
  const stickToBottom = useRef(true);

  const connection: Connection = useMemo(
    () => ({ baseUrl: settings.baseUrl, apiKey: settings.apiKey }),
    [settings.baseUrl, settings.apiKey],
  );

  // --- server and models -------------------------------------------------------------------
  const { models, server, recheck, refreshModels } = useServerModels(connection, dialog === "models");

  // The chat can pick a chat model that is on this machine, loaded ones first.
  const pickable = useMemo(
    () => grouped(models).flatMap((group) => group.models.filter(canPick)),
    [models],
  );
  const pickableIds = useMemo(() => pickable.map((m) => m.id), [pickable]);
  const model =
    conversation.model && pickableIds.includes(conversation.model) ? conversation.model : (pickableIds[0] ?? "");

  const act = (action: LibraryAction, id: string) => {
    setLibraryError(null);
    libraryAction(connection, action, id)
      .catch((error: unknown) => setLibraryError(error instanceof Error ? error.message : String(error)))
      .finally(refreshModels);
  };

  // --- persistence -------------------------------------------------------------------------
  const refreshList = useCallback(() => {
    setSummaries(query.trim() ? store.search(query) : store.list());
  }, [store, query]);
  useEffect(refreshList, [refreshList]);

  const persist = useCallback(
    (value: Conversation) => {
      if (value.messages.length === 0) return; // an untouched new chat is not worth keeping
      try {
        store.save(value);
      } catch (error) {
        setNotice(error instanceof StorageError ? error.message : "Could not save the conversation.");
      }
    },
    [store],
  );

  /** Save a conversation and show it if it is the one on screen. */
  const commit = useCallback(
    (value: Conversation) => {
      persist(value);
      if (value.id === currentIdRef.current) setConversation(value);
      refreshList();
    },
    [persist, refreshList],
  );

  useEffect(() => {
    const onHash = () => {
      const found = store.get(idFromHash());
      if (found && found.id !== currentIdRef.current) setConversation(found);
    };
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, [store]);

  const open = (value: Conversation) => {
    // Now, not at the next render: a reply painting in between must see the switch.
    currentIdRef.current = value.id;
    setConversation(value);
    stickToBottom.current = true;
    const hash = value.messages.length ? `#${encodeURIComponent(value.id)}` : "";
    if (window.location.hash !== hash) history.replaceState(null, "", hash || window.location.pathname);
    setSidebarOpen(false);
  };

  // --- generation --------------------------------------------------------------------------
  const generate = async (base: Conversation) => {
    const chosen = base.model && pickableIds.includes(base.model) ? base.model : (pickableIds[0] ?? base.model);
    const target = models.find((m) => m.id === chosen);
    setLoadingModel(target && target.state !== "loaded" ? chosen : null);
    const reply: Message = { id: newId(), role: "assistant", content: "", createdAt: Date.now(), model: chosen };
    const request = chatRequest(base, chosen);
    liveRef.current = { ...base, model: chosen, messages: [...base.messages, reply], updatedAt: Date.now() };
    const update = (patch: Partial<Message>) => {
      const live = liveRef.current;
      if (live) {
        liveRef.current = { ...live, messages: live.messages.map((m) => (m.id === reply.id ? { ...m, ...patch } : m)) };
      }
    };
    if (base.id === currentIdRef.current && !window.location.hash) {
      history.replaceState(null, "", `#${encodeURIComponent(base.id)}`);
    }
    stickToBottom.current = true;
    setAnnouncement("");
    commit(liveRef.current);

    const controller = new AbortController();
    abortRef.current = controller;
    setStreamingId(base.id);
    const meter = new ReplyMeter(performance.now());
    const parts = new ReplyParts();
    let frame = 0;
    let savedAt = performance.now();
    const reasoningPatch = (): Partial<Message> => ({
      reasoning: parts.reasoning || undefined,
      thinkingMs: parts.thinkingMs ?? undefined,
    });
    // Render at most once per frame however fast tokens arrive.
    const paint = () => {
      frame = 0;
      update({ content: parts.content, ...reasoningPatch() });
      const live = liveRef.current;
      if (!live) return;
      if (live.id === currentIdRef.current) setConversation(live);
      if (performance.now() - savedAt > SAVE_DURING_STREAM_MS) {
        savedAt = performance.now();
        persist(live);
      }
    };
    let stopped = false;
    let failure: MessageError | undefined;
    try {
      for await (const item of streamChat(connection, request, controller.signal)) {
        if (item.type === "delta" || item.type === "reasoning") {
          setLoadingModel(null);
          const now = performance.now();
          if (item.type === "delta") parts.contentDelta(item.content, now);
          else parts.reasoningDelta(item.content, now);
          meter.delta(now);
          if (!frame) frame = requestAnimationFrame(paint);
        } else if (item.type === "usage") {
          meter.setUsage(item.usage);
        } else if (item.type === "finish") {
          meter.finish(item.reason);
        }
      }
    } catch (error) {
      if (isAbort(error)) stopped = true;
      else failure = toMessageError(error);
    } finally {
      if (frame) cancelAnimationFrame(frame);
      setLoadingModel(null);
      refreshModels(); // the reply may have loaded its model, and evicted another
      parts.end(performance.now());
      const content = parts.content;
      const stats = meter.stats();
      update({
        content,
        ...reasoningPatch(),
        stats: stats.completionTokens > 0 ? stats : undefined,
        stopped: stopped || undefined,
        error: failure,
      });
      const live = liveRef.current;
      liveRef.current = null;
      abortRef.current = null;
      setStreamingId(null);
      // null: the conversation was deleted while its reply streamed; do not bring it back.
      if (live) commit({ ...live, updatedAt: Date.now() });
      setAnnouncement(
        failure ? `${failure.title}. ${failure.message}` : stopped ? "Reply stopped." : `Reply: ${content.slice(0, 500)}`,
      );
    }
  };

  const busy = streamingId !== null;

  const send = (text: string, images: string[]) => {
    if (busy) return;
    const message: Message = { id: newId(), role: "user", content: text, createdAt: Date.now() };
    if (images.length > 0) message.images = images;
    const isFirst = !conversation.messages.some((m) => m.role === "user");
    void generate({
      ...conversation,
      title: isFirst && !conversation.titleEdited ? titleFrom(text) : conversation.title,
      messages: [...conversation.messages, message],
    });
  };

  const stop = () => abortRef.current?.abort();

  /** Drop the last reply and ask again (regenerate, and retry after an error). */
  const regenerate = () => {
    if (busy) return;
    const messages = [...conversation.messages];
    if (messages.at(-1)?.role === "assistant") messages.pop();
    if (messages.length === 0) return;
    void generate({ ...conversation, messages });
  };

  const edit = (id: string, text: string) => {
    if (busy) return;
    const index = conversation.messages.findIndex((m) => m.id === id);
    if (index < 0) return;
    const edited = { ...conversation.messages[index], content: text };
    const isFirst = !conversation.messages.slice(0, index).some((m) => m.role === "user");
    void generate({
      ...conversation,
      title: isFirst && !conversation.titleEdited ? titleFrom(text) : conversation.title,
      messages: [...conversation.messages.slice(0, index), edited],
    });
  };

  // --- conversations -----------------------------------------------------------------------
  const newChat = () => open(newConversation(model));

  const select = (id: string) => {
    const found = store.get(id);
    if (found) open(found);
  };

  const rename = (id: string, title: string) => {
    const found = id === conversation.id ? conversation : store.get(id);
    if (!found) return;
    if (liveRef.current?.id === id) liveRef.current = { ...liveRef.current, title, titleEdited: true };
    commit({ ...found, title, titleEdited: true });
  };

  const remove = (id: string) => {
    const found = store.get(id);
    if (!found || !window.confirm(`Delete “${found.title}”?`)) return;
    if (liveRef.current?.id === id) {
      liveRef.current = null;
      stop();
    }
    store.delete(id);
    if (id === conversation.id) open(newConversation(model));
    refreshList();
  };

  const exportAll = () => {
    const blob = new Blob([store.exportJson()], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = `llamaedge-chats-${new Date().toISOString().slice(0, 10)}.json`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 1000);
  };

  const importFile = async (file: File) => {
    try {
      const count = store.importJson(await file.text());
      setNotice(`Imported ${count} chat${count === 1 ? "" : "s"}.`);
    } catch (error) {
      setNotice(`Import failed: ${error instanceof Error ? error.message : String(error)}`);
    }
    refreshList();
  };

  useEffect(() => {
    if (!notice) return;
    const timer = window.setTimeout(() => setNotice(null), 6000);
    return () => window.clearTimeout(timer);
  }, [notice]);

  const saveSettings = (next: Settings) => {
    setSettings(next);
    store.saveSettings(next);
    applyTheme(next.theme);
    setDialog(null);
  };

  const setTheme = (theme: Theme) => saveSettings({ ...settings, theme });

  const updateConversation = (patch: Pick<Partial<Conversation>, "model" | "systemPrompt" | "params">) => {
    const next = { ...conversation, ...patch };
    if (liveRef.current?.id === next.id) liveRef.current = { ...liveRef.current, ...patch };
    if (next.messages.length) commit(next);
    else setConversation(next);
  };

  // --- scrolling ---------------------------------------------------------------------------
  useEffect(() => {
    const el = threadRef.current;
    if (el && stickToBottom.current) el.scrollTop = el.scrollHeight;
  }, [conversation]);

  const onScroll = () => {
    const el = threadRef.current;
    if (el) stickToBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  };

  // --- view --------------------------------------------------------------------------------
  const last = conversation.messages.at(-1);
  const streamingHere = streamingId === conversation.id;

  return (
    <div class="layout">
      <Sidebar
        open={sidebarOpen}
        summaries={summaries}
        currentId={conversation.id}
        query={query}
        theme={settings.theme}
        notice={notice}
        onQuery={setQuery}
        onNew={newChat}
        onSelect={select}
        onRename={rename}
        onDelete={remove}
        onExport={exportAll}
        onImport={(file) => void importFile(file)}
        onTheme={setTheme}
        onSettings={() => setDialog("settings")}
        onClose={() => setSidebarOpen(false)}
      />
      <main class="chat" aria-label="Chat">
        <TopBar
          sidebarOpen={sidebarOpen}
          model={model}
          pickable={pickable}
          title={conversation.title}
          onOpenSidebar={() => setSidebarOpen(true)}
          onModel={(id) => updateConversation({ model: id })}
          onModels={() => setDialog("models")}
          onChatSettings={() => setDialog("chat")}
        />
        <ServerBanner server={server} onRetry={recheck} />
        <div class="thread" ref={threadRef} onScroll={onScroll}>
          {conversation.messages.length === 0 ? (
            <div class="empty">
              <h2>How can I help?</h2>
              <p class="muted">
                Chats stay in this browser. {model ? `Model: ${model}.` : ""}
              </p>
            </div>
          ) : (
            <div class="messages" role="log" aria-label="Messages" aria-live="off">
              {conversation.messages.map((message) => (
                <MessageView
                  key={message.id}
                  message={message}
                  streaming={streamingHere && message === last && message.role === "assistant"}
                  loadingModel={streamingHere && message === last ? loadingModel : null}
                  canRegenerate={message === last && message.role === "assistant" && !message.error}
                  busy={busy}
                  showThinking={settings.showThinking}
                  onEdit={edit}
                  onRegenerate={regenerate}
                  onRetry={regenerate}
                />
              ))}
            </div>
          )}
        </div>
        <div class="sr-only" role="status" aria-live="polite">
          {announcement}
        </div>
        <div class="composer-wrap">
          <Composer
            streaming={streamingHere}
            disabled={busy && !streamingHere}
            vision={models.find((m) => m.id === model)?.capabilities.includes("vision") ?? false}
            imagesHeld={conversation.messages.reduce((n, m) => n + (m.images?.length ?? 0), 0)}
            onSend={send}
            onStop={stop}
          />
          <p class="footnote muted">
            Replies are generated locally and can be wrong.
            <span class="keys"> Enter sends, Shift+Enter starts a new line.</span>
          </p>
        </div>
      </main>
      {dialog === "settings" && (
        <SettingsDialog settings={settings} onSave={saveSettings} onClose={() => setDialog(null)} />
      )}
      {dialog === "models" && (
        <ModelsDialog
          models={models}
          current={model}
          error={libraryError}
          onAction={act}
          onUse={(id) => {
            updateConversation({ model: id });
            setDialog(null);
          }}
          onClose={() => {
            setLibraryError(null);
            setDialog(null);
          }}
        />
      )}
      {dialog === "chat" && (
        <ChatSettingsDialog
          systemPrompt={conversation.systemPrompt}
          params={conversation.params}
          onClose={() => setDialog(null)}
          onSave={(systemPrompt, params) => {
            updateConversation({ systemPrompt, params });
            setDialog(null);
          }}
        />
      )}
    </div>
  );
}
