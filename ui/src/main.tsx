import { render } from "preact";
import { App } from "./app";
import { ConversationStore } from "./storage";
import { applyTheme } from "./theme";
// The stylesheet in its parts, in cascade order: the phone layout overrides what comes before it.
import "./styles/theme.css";
import "./styles/chrome.css";
import "./styles/thread.css";
import "./styles/markdown.css";
import "./styles/composer.css";
import "./styles/dialogs.css";
import "./styles/phones.css";
import "./styles/models.css";

const store = new ConversationStore(window.localStorage);
applyTheme(store.loadSettings().theme);
render(<App store={store} />, document.getElementById("app")!);
