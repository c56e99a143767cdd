import { defineConfig } from "vitest/config";

// The config runs in Node; this declaration spares a dependency on @types/node.
declare const process: { env: Record<string, string | undefined> };

// The bundle is committed (llamaedge/webui) and a test rebuilds it and compares bytes, so the
// output must depend on the sources alone: hashed file names, no timestamps, no absolute paths.
export default defineConfig({
  base: "./",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  // `npm run dev` serves the sources with hot reload and forwards the API to a running
  // `llamaedge serve` (LLAMAEDGE_URL, default http://127.0.0.1:8080).
  server: {
    proxy: Object.fromEntries(
      ["/v1", "/health"].map((path) => [path, process.env.LLAMAEDGE_URL ?? "http://127.0.0.1:8080"]),
    ),
  },
  build: {
    outDir: "../llamaedge/webui",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    reportCompressedSize: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
