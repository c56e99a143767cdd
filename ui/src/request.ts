/** The pure translation from a stored conversation to an OpenAI chat request. */

import type { ChatMessage, ChatRequest, ContentPart } from "./api";
import type { Conversation } from "./types";

/** The most images a request carries: the latest ones of the conversation. Older images stay
 * on the page but are sent as a note, so that a long chat about pictures does not send them
 * all again with every turn (each costs its tokens of the context). */
export const IMAGES_SENT_MAX = 4;
export const IMAGE_LEFT_OUT = "[an image shown earlier, no longer sent]";

/** What is sent for a conversation: the system prompt, then the messages that carry text, with
 * their images (the latest IMAGES_SENT_MAX of them). */
export function chatRequest(conversation: Conversation, model: string): ChatRequest {
  const messages: ChatMessage[] = [];
  if (conversation.systemPrompt.trim()) messages.push({ role: "system", content: conversation.systemPrompt });
  let imagesLeft = IMAGES_SENT_MAX;
  const sent = new Set<string>(); // "message id:index" of the images sent
  for (const message of [...conversation.messages].reverse()) {
    (message.images ?? []).forEach((_, i, all) => {
      const index = all.length - 1 - i;
      if (imagesLeft > 0) {
        sent.add(`${message.id}:${index}`);
        imagesLeft -= 1;
      }
    });
  }
  for (const message of conversation.messages) {
    if (message.role === "assistant" && message.content === "") continue; // failed before any text
    if (!message.images?.length) {
      messages.push({ role: message.role, content: message.content });
      continue;
    }
    const parts: ContentPart[] = [{ type: "text", text: message.content }];
    message.images.forEach((url, i) => {
      parts.push(sent.has(`${message.id}:${i}`) ? { type: "image_url", image_url: { url } } : { type: "text", text: IMAGE_LEFT_OUT });
    });
    messages.push({ role: message.role, content: parts });
  }
  const request: ChatRequest = {
    model,
    messages,
    temperature: conversation.params.temperature,
    top_p: conversation.params.topP,
  };
  if (conversation.params.maxTokens !== null) request.max_tokens = conversation.params.maxTokens;
  return request;
}
