import { describe, expect, it } from "vitest";
import { apiUrl } from "../src/api";
import { chatRequest } from "../src/request";
import { newConversation } from "../src/storage";

describe("apiUrl", () => {
  it.each([
    ["", "/v1/models", "/v1/models"],
    ["http://127.0.0.1:8080", "/v1/models", "http://127.0.0.1:8080/v1/models"],
    ["http://127.0.0.1:8080/", "/v1/models", "http://127.0.0.1:8080/v1/models"],
    ["http://host/v1", "/v1/chat/completions", "http://host/v1/chat/completions"],
    ["https://host/proxy/v1/", "/v1/models", "https://host/proxy/v1/models"],
  ])("%s + %s", (base, path, expected) => {
    expect(apiUrl(base, path)).toBe(expected);
  });
});

describe("chatRequest", () => {
  it("sends the system prompt, the messages with text, and the parameters", () => {
    const conversation = newConversation("tiny");
    conversation.systemPrompt = "Be brief.";
    conversation.params = { temperature: 0.3, topP: 0.8, maxTokens: 50 };
    conversation.messages = [
      { id: "1", role: "user", content: "hi", createdAt: 0 },
      { id: "2", role: "assistant", content: "", createdAt: 0, error: { kind: "server", title: "", message: "", hint: "", retryable: true } },
      { id: "3", role: "user", content: "again", createdAt: 0 },
    ];
    expect(chatRequest(conversation, "tiny")).toEqual({
      model: "tiny",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "hi" },
        { role: "user", content: "again" },
      ],
      temperature: 0.3,
      top_p: 0.8,
      max_tokens: 50,
    });
  });

  it("leaves max_tokens to the server when unset and omits an empty system prompt", () => {
    const conversation = newConversation("m");
    conversation.messages = [{ id: "1", role: "user", content: "q", createdAt: 0 }];
    const request = chatRequest(conversation, "m");
    expect(request.messages).toEqual([{ role: "user", content: "q" }]);
    expect("max_tokens" in request).toBe(false);
  });

  it("sends earlier replies' answers only, never their reasoning", () => {
    const conversation = newConversation("m");
    conversation.messages = [
      { id: "1", role: "user", content: "2+2?", createdAt: 0 },
      { id: "2", role: "assistant", content: "4", reasoning: "Two plus two is four.", thinkingMs: 900, createdAt: 0 },
      { id: "3", role: "user", content: "and 3+3?", createdAt: 0 },
    ];
    const request = chatRequest(conversation, "m");
    expect(request.messages).toEqual([
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
      { role: "user", content: "and 3+3?" },
    ]);
    expect(JSON.stringify(request)).not.toContain("Two plus two");
  });

  it("skips a reply that was stopped while it was still thinking", () => {
    const conversation = newConversation("m");
    conversation.messages = [
      { id: "1", role: "user", content: "q", createdAt: 0 },
      { id: "2", role: "assistant", content: "", reasoning: "Hmm, let me", stopped: true, createdAt: 0 },
      { id: "3", role: "user", content: "q again", createdAt: 0 },
    ];
    expect(chatRequest(conversation, "m").messages).toEqual([
      { role: "user", content: "q" },
      { role: "user", content: "q again" },
    ]);
  });
});
