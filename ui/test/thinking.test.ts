import { describe, expect, it } from "vitest";
import { formatThought, ReplyParts, splitStored, ThinkSplitter } from "../src/thinking";

/** Feed `pieces` to a fresh splitter; `end` says whether the stream finished. */
function split(pieces: string[], end = true): { reasoning: string; content: string; thinking: boolean } {
  const splitter = new ThinkSplitter();
  for (const piece of pieces) splitter.push(piece);
  if (end) splitter.end();
  return { reasoning: splitter.reasoning, content: splitter.content, thinking: splitter.thinking };
}

/** Every way of cutting `text` in two, and in three around each tag character. */
function cuts(text: string): string[][] {
  const result: string[][] = [];
  for (let i = 0; i <= text.length; i++) result.push([text.slice(0, i), text.slice(i)]);
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= Math.min(text.length, i + 9); j++) result.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return result;
}

const INLINE = "<think>\nThe user wants 2+2. That is 4.\n</think>\n\nThe answer is **4**.";

describe("ThinkSplitter", () => {
  it("splits a whole block from the answer, trimming the whitespace between", () => {
    expect(split([INLINE])).toEqual({
      reasoning: "The user wants 2+2. That is 4.",
      content: "The answer is **4**.",
      thinking: false,
    });
  });

  it("gives the same split at every cut position of the text, tags included", () => {
    const expected = split([INLINE]);
    for (const pieces of cuts(INLINE)) expect(split(pieces), JSON.stringify(pieces)).toEqual(expected);
    // One character at a time.
    expect(split([...INLINE])).toEqual(expected);
  });

  it("never shows part of a tag while it streams", () => {
    const splitter = new ThinkSplitter();
    for (const ch of INLINE) {
      splitter.push(ch);
      expect(splitter.reasoning).not.toMatch(/<\/?t?h?i?n?k?$|<$/);
      expect(splitter.content).not.toMatch(/</);
    }
  });

  it("streams reasoning while the block is open", () => {
    const splitter = new ThinkSplitter();
    splitter.push("<think>Let me");
    expect(splitter.thinking).toBe(true);
    expect(splitter.reasoning).toBe("Let me");
    expect(splitter.content).toBe("");
    splitter.push(" think</thi");
    expect(splitter.reasoning).toBe("Let me think");
    expect(splitter.thinking).toBe(true);
    splitter.push("nk>Done");
    expect(splitter.thinking).toBe(false);
    expect(splitter.content).toBe("Done");
  });

  it("keeps a block that never closes as reasoning, also when the stream ends", () => {
    expect(split(["<think>I am still thi", "nking about</th"], false)).toEqual({
      reasoning: "I am still thinking about",
      content: "",
      thinking: true,
    });
    expect(split(["<think>I am still thi", "nking about</th"])).toEqual({
      reasoning: "I am still thinking about</th",
      content: "",
      thinking: true,
    });
  });

  it("takes the text before a lone closing tag as reasoning: the template opened the block", () => {
    const text = "Okay, the user greets me.\n</think>\n\nHello!";
    const expected = { reasoning: "Okay, the user greets me.", content: "Hello!", thinking: false };
    for (const pieces of cuts(text)) expect(split(pieces), JSON.stringify(pieces)).toEqual(expected);
    // A template-opened block with nothing in it.
    expect(split(["</think>\n\nHi"])).toEqual({ reasoning: "", content: "Hi", thinking: false });
  });

  it("leaves text without tags alone", () => {
    expect(split(["Just an answer, ", "with a < sign"])).toEqual({
      reasoning: "",
      content: "Just an answer, with a < sign",
      thinking: false,
    });
    // A stream that ends on something that looked like the start of a tag.
    expect(split(["<thi"])).toEqual({ reasoning: "", content: "<thi", thinking: false });
    expect(split(["Look: </thi"])).toEqual({ reasoning: "", content: "Look: </thi", thinking: false });
  });

  it("treats tags after the block, or not at the start, as answer text", () => {
    expect(split(["<think>a</think>Use <think> and </think> tags."])).toEqual({
      reasoning: "a",
      content: "Use <think> and </think> tags.",
      thinking: false,
    });
    expect(split(["Say <think> please"])).toEqual({ reasoning: "", content: "Say <think> please", thinking: false });
  });
});

describe("ReplyParts", () => {
  it("takes reasoning_content as the reasoning and content as the answer, and times the thinking", () => {
    const parts = new ReplyParts();
    parts.reasoningDelta("Let me ", 1000);
    parts.reasoningDelta("think.", 1500);
    expect(parts.reasoning).toBe("Let me think.");
    expect(parts.content).toBe("");
    expect(parts.thinkingMs).toBe(null);
    parts.contentDelta("\n\nFour.", 3400);
    parts.contentDelta(" Done.", 3600);
    parts.end(3700);
    expect(parts.reasoning).toBe("Let me think.");
    expect(parts.content).toBe("Four. Done.");
    expect(parts.thinkingMs).toBe(2400);
  });

  it("does not look for tags in content once the server has split the reasoning", () => {
    const parts = new ReplyParts();
    parts.reasoningDelta("hm", 0);
    parts.contentDelta("Write </think> to close a block.", 10);
    parts.end(20);
    expect(parts.reasoning).toBe("hm");
    expect(parts.content).toBe("Write </think> to close a block.");
  });

  it("splits inline tags and times the thinking up to the answer's first token", () => {
    const parts = new ReplyParts();
    parts.contentDelta("<think>", 100);
    parts.contentDelta("Hmm.", 200);
    expect(parts.reasoning).toBe("Hmm.");
    expect(parts.content).toBe("");
    parts.contentDelta("</think>", 900);
    parts.contentDelta("\n\n", 950);
    parts.contentDelta("Yes", 1100);
    parts.end(1200);
    expect(parts.reasoning).toBe("Hmm.");
    expect(parts.content).toBe("Yes");
    expect(parts.thinkingMs).toBe(1000);
  });

  it("times a template-opened block from the first token, not from when it was recognised", () => {
    const parts = new ReplyParts();
    parts.contentDelta("Thinking out loud", 100);
    expect(parts.content).toBe("Thinking out loud");
    parts.contentDelta("</think>Answer", 2100);
    parts.end(2200);
    expect(parts.reasoning).toBe("Thinking out loud");
    expect(parts.content).toBe("Answer");
    expect(parts.thinkingMs).toBe(2000);
  });

  it("times a reply that stopped while thinking to its end, and a plain reply not at all", () => {
    const stopped = new ReplyParts();
    stopped.reasoningDelta("Still going", 100);
    stopped.end(700);
    expect(stopped.content).toBe("");
    expect(stopped.thinkingMs).toBe(600);

    const plain = new ReplyParts();
    plain.contentDelta("Hello", 100);
    plain.end(200);
    expect(plain.reasoning).toBe("");
    expect(plain.thinkingMs).toBe(null);
  });
});

describe("splitStored", () => {
  it("splits a reply kept with its <think> block, and leaves other replies alone", () => {
    expect(splitStored("<think>\nhm\n</think>\n\nYes.")).toEqual({ reasoning: "hm", content: "Yes." });
    expect(splitStored("Close it with </think>, like this.")).toBe(null);
    expect(splitStored("Plain.")).toBe(null);
  });
});

describe("formatThought", () => {
  it.each([
    [400, "Thought for 0.4 s"],
    [2449, "Thought for 2.4 s"],
    [12_300, "Thought for 12 s"],
  ])("%d ms", (ms, expected) => {
    expect(formatThought(ms)).toBe(expected);
  });
});
