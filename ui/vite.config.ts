import { defineConfig } from "vitest/config";

// The bundle is committed (llamaedge/webui) and a test rebuilds it and compares bytes, so the
// output must depend on the sources alone: hashed file names, no timestamps, no absolute paths.
export default defineConfig({
  base: "./",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
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
