import { useCallback, useEffect, useState } from "preact/hooks";
import { listModels, type Connection } from "./api";
import type { ServerState } from "./components/ServerBanner";
import { ApiError, isAbort } from "./errors";
import { busy as libraryBusy, type ModelInfo } from "./library";

const LOADING_POLL_MS = 2000;
/** How often the model list is read while a model loads or downloads, or the Models dialog is open. */
const LIBRARY_POLL_MS = 1000;

/** The server's state and its models, checked again on `recheck` and followed while a model loads
 * or downloads, or while the Models dialog is open (`modelsDialogOpen`). */
export function useServerModels(connection: Connection, modelsDialogOpen: boolean) {
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [server, setServer] = useState<ServerState>({ state: "checking" });

  const [checkCount, setCheckCount] = useState(0);
  const recheck = useCallback(() => setCheckCount((n) => n + 1), []);
  useEffect(() => {
    const controller = new AbortController();
    let timer = 0;
    setServer({ state: "checking" });
    listModels(connection, controller.signal)
      .then((list) => {
        setModels(list);
        setServer({ state: "ready" });
      })
      .catch((error: unknown) => {
        if (isAbort(error)) return;
        const apiError = error instanceof ApiError ? error : new ApiError("unreachable", String(error));
        setServer({ state: "error", error: apiError });
        // A list from another server, or one we can no longer reach, would offer wrong choices.
        if (apiError.kind !== "loading") setModels([]);
        // While the model loads the server answers 503: keep asking until it is ready.
        if (apiError.kind === "loading") timer = window.setTimeout(recheck, LOADING_POLL_MS);
      });
    return () => {
      controller.abort();
      window.clearTimeout(timer);
    };
  }, [connection, checkCount, recheck]);

  // While a model loads or downloads, or the Models dialog is open, follow the library.
  const watching = modelsDialogOpen || libraryBusy(models);
  useEffect(() => {
    if (!watching || server.state !== "ready") return;
    const controller = new AbortController();
    const timer = window.setInterval(() => {
      listModels(connection, controller.signal)
        .then(setModels)
        .catch(() => undefined); // the next tick tries again; the banner is for the first check
    }, LIBRARY_POLL_MS);
    return () => {
      controller.abort();
      window.clearInterval(timer);
    };
  }, [watching, server.state, connection]);

  const refreshModels = useCallback(() => {
    listModels(connection)
      .then(setModels)
      .catch(() => undefined);
  }, [connection]);

  return { models, server, recheck, refreshModels };
}
