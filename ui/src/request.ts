/** The pure translation from a stored conversation to an OpenAI chat request. */

import type { ChatMessage, ChatRequest } from "./api";
import type { Conversation } from "./types";

/** What is sent for a conversation: the system prompt, then the messages that carry text. */
export function chatRequest(conversation: Conversation, model: string): ChatRequest {
  const messages: ChatMessage[] = [];
  if (conversation.systemPrompt.trim()) messages.push({ role: "system", content: conversation.systemPrompt });
  for (const message of conversation.messages) {
    if (message.role === "assistant" && message.content === "") continue; // failed before any text
    messages.push({ role: message.role, content: message.content });
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
