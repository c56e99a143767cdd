import { describe, expect, it } from "vitest";
import { busy, canChat, canPick, formatBytes, grouped, percent, readModel, readProgress } from "../src/library";

describe("readModel", () => {
  it("takes a plain OpenAI model (an id alone) as a loaded model that can chat", () => {
    const model = readModel({ id: "gpt-x", object: "model" });
    expect(model).toMatchObject({ id: "gpt-x", state: "loaded", downloaded: true, capabilities: [], fits: null });
    expect(model && canPick(model)).toBe(true);
  });

  it("reads the library's fields", () => {
    const model = readModel({
      id: "smollm2-135m",
      capabilities: ["chat", "tools"],
      size: 98_000_000,
      context_length: 4096,
      fits: false,
      downloaded: true,
      status: { value: "unloaded" },
    });
    expect(model).toEqual({
      id: "smollm2-135m",
      state: "unloaded",
      capabilities: ["chat", "tools"],
      sizeBytes: 98_000_000,
      contextLength: 4096,
      fits: false,
      downloaded: true,
      progress: null,
      reason: null,
    });
  });

  it("reads llama-server's shape of a load that went wrong, and our reason", () => {
    expect(readModel({ id: "m", status: { value: "unloaded", failed: true, exit_code: 1 } })?.state).toBe("failed");
    expect(readModel({ id: "m", status: { value: "failed", reason: "not a GGUF file" } })).toMatchObject({
      state: "failed",
      reason: "not a GGUF file",
    });
  });

  it("refuses entries without an id", () => {
    expect(readModel({ object: "model" })).toBeNull();
    expect(readModel("x")).toBeNull();
    expect(readModel({ id: "" })).toBeNull();
  });
});

describe("readProgress", () => {
  it("reads ours and llama-server's per-file shape", () => {
    expect(readProgress({ done: 5, total: 10 })).toEqual({ done: 5, total: 10 });
    expect(readProgress({ "https://a/x.gguf": { done: 5, total: 10 }, "https://a/y.gguf": { done: 1, total: 2 } })).toEqual({
      done: 6,
      total: 12,
    });
    expect(readProgress(null)).toBeNull();
    expect(readProgress({})).toBeNull();
  });

  it("gives a percentage only when the total is known", () => {
    expect(percent({ done: 1, total: 3 })).toBe(33);
    expect(percent({ done: 5, total: 0 })).toBeNull();
    expect(percent(null)).toBeNull();
  });
});

describe("the menu", () => {
  const models = [
    readModel({ id: "far", downloaded: false, status: { value: "unloaded" }, capabilities: ["chat"] }),
    readModel({ id: "disk", status: { value: "unloaded" }, capabilities: ["chat"] }),
    readModel({ id: "embed", status: { value: "loaded" }, capabilities: ["embedding"] }),
    readModel({ id: "live", status: { value: "loaded" }, capabilities: ["chat", "tools"] }),
    readModel({ id: "coming", status: { value: "downloading", progress: { done: 1, total: 4 } }, downloaded: false }),
  ].filter((m) => m !== null);

  it("lists loaded first, then downloaded, then downloadable, keeping the server's order", () => {
    expect(grouped(models).map((g) => [g.section, g.models.map((m) => m.id)])).toEqual([
      ["Loaded", ["embed", "live"]],
      ["Downloaded", ["disk"]],
      ["Downloadable", ["far", "coming"]],
    ]);
  });

  it("offers only chat models on this machine for chat", () => {
    expect(models.filter(canPick).map((m) => m.id)).toEqual(["disk", "live"]);
    expect(models.filter(canChat).map((m) => m.id)).toEqual(["far", "disk", "live", "coming"]);
  });

  it("watches the list while something loads or downloads", () => {
    expect(busy(models)).toBe(true);
    expect(busy(models.filter((m) => m.state !== "downloading"))).toBe(false);
  });

  it("writes sizes in decimal units", () => {
    expect(formatBytes(98_000_000)).toBe("98.0 MB");
    expect(formatBytes(1_500_000_000)).toBe("1.5 GB");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(null)).toBe("");
  });
});
