import { describe, expect, it } from "vitest";
import { chatRequest, IMAGE_LEFT_OUT, IMAGES_SENT_MAX } from "../src/request";
import { newConversation } from "../src/storage";

describe("chatRequest with images", () => {
  it("sends a user message's images as image_url parts after its text", () => {
    const conversation = newConversation("m");
    conversation.messages = [{ id: "1", role: "user", content: "what?", createdAt: 0, images: ["data:image/png;base64,AA"] }];
    expect(chatRequest(conversation, "m").messages).toEqual([
      { role: "user", content: [{ type: "text", text: "what?" }, { type: "image_url", image_url: { url: "data:image/png;base64,AA" } }] },
    ]);
  });

  it("sends the latest images only, and a note for each older one", () => {
    const conversation = newConversation("m");
    const urls = Array.from({ length: IMAGES_SENT_MAX + 2 }, (_, i) => `data:image/png;base64,${i}`);
    conversation.messages = [
      { id: "1", role: "user", content: "a", createdAt: 0, images: urls.slice(0, 3) },
      { id: "2", role: "assistant", content: "b", createdAt: 0 },
      { id: "3", role: "user", content: "c", createdAt: 0, images: urls.slice(3) },
    ];
    const sent = chatRequest(conversation, "m").messages.flatMap((m) => (typeof m.content === "string" ? [] : m.content));
    const images = sent.filter((p) => p.type === "image_url").map((p) => (p.type === "image_url" ? p.image_url.url : ""));
    expect(images).toEqual(urls.slice(2));
    expect(sent.filter((p) => p.type === "text" && p.text === IMAGE_LEFT_OUT)).toHaveLength(2);
  });
});
