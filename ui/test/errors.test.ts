import { describe, expect, it } from "vitest";
import { errorFrom } from "../src/errors";

describe("errorFrom", () => {
  it.each([
    [503, { error: { message: "Model is loading", type: "server_error" } }, "loading", true],
    [429, { error: { message: "busy", type: "server_error" } }, "loading", true],
    [401, { error: { message: "no key", type: "authentication_error" } }, "auth", false],
    [404, { error: { message: "model x not found", code: "model_not_found" } }, "not_found", false],
    [400, { error: { message: "too long", code: "context_length_exceeded" } }, "context", false],
    [400, { error: { message: "temperature must be <= 2" } }, "bad_request", false],
    [500, { error: { message: "boom" } }, "server", true],
    [502, null, "server", true],
  ] as const)("HTTP %s %j is %s", (status, body, kind, retryable) => {
    const error = errorFrom(status, body);
    expect(error.kind).toBe(kind);
    expect(error.retryable).toBe(retryable);
    expect(error.status).toBe(status);
    expect(error.hint.length).toBeGreaterThan(10);
  });

  it("keeps the server's message, or says the status when there is none", () => {
    expect(errorFrom(400, { error: { message: "bad messages" } }).message).toBe("bad messages");
    expect(errorFrom(502, "<html>").message).toBe("The server answered HTTP 502.");
  });
});
