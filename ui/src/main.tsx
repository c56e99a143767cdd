import { render } from "preact";
import { App } from "./app";
import { ConversationStore } from "./storage";
import { applyTheme } from "./theme";
import "./styles.css";

const store = new ConversationStore(window.localStorage);
applyTheme(store.loadSettings().theme);
render(<App store={store} />, document.getElementById("app")!);
