import type { Theme } from "./types";

/**
 * "system" leaves the choice to the stylesheet's prefers-color-scheme rule; "light" and
 * "dark" pin it with a data attribute on <html>.
 */
export function applyTheme(theme: Theme): void {
  const root = document.documentElement;
  if (theme === "system") root.removeAttribute("data-theme");
  else root.setAttribute("data-theme", theme);
}
