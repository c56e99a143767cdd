import { describe, expect, it } from "vitest";
import { SseParser } from "../src/sse";

function feed(pieces: string[]): { data: string; event: string }[] {
  const parser = new SseParser();
  const events = pieces.flatMap((piece) => parser.push(piece));
  return events.map(({ data, event }) => ({ data, event }));
}

describe("SseParser", () => {
  it("parses whole events", () => {
    expect(feed(['data: {"a":1}\n\ndata: [DONE]\n\n'])).toEqual([
      { data: '{"a":1}', event: "message" },
      { data: "[DONE]", event: "message" },
    ]);
  });

  it("gives the same events however the text is split", () => {
    const text = 'data: {"x":"héllo"}\n\n: ping\n\nevent: note\ndata: one\ndata: two\n\ndata: [DONE]\n\n';
    const whole = feed([text]);
    expect(whole).toHaveLength(3);
    for (let size = 1; size <= 7; size++) {
      const pieces: string[] = [];
      for (let i = 0; i < text.length; i += size) pieces.push(text.slice(i, i + size));
      expect(feed(pieces)).toEqual(whole);
    }
  });

  it("joins multi-line data with newlines and keeps the event name", () => {
    expect(feed(["event: note\ndata: first\ndata:second\ndata:  third\n\n"])).toEqual([
      { data: "first\nsecond\n third", event: "note" },
    ]);
  });

  it("accepts CRLF and CR line ends, also when a CRLF pair is split across reads", () => {
    // Taking the "\n" after a split "\r" for a blank line would end the event after "a".
    expect(feed(["data: a\r", "\ndata: b\r\n\r", "\ndata: c\r\r"])).toEqual([
      { data: "a\nb", event: "message" },
      { data: "c", event: "message" },
    ]);
  });

  it("ignores comments and events without data", () => {
    expect(feed([": keep-alive\n\nevent: empty\n\nretry: 10\n\ndata: x\n\n"])).toEqual([
      { data: "x", event: "message" },
    ]);
  });

  it("holds an unfinished event until its blank line arrives", () => {
    const parser = new SseParser();
    expect(parser.push("data: par")).toEqual([]);
    expect(parser.push("tial\n")).toEqual([]);
    expect(parser.push("\n").map((e) => e.data)).toEqual(["partial"]);
  });

  it("flush delivers a last event whose blank line never came", () => {
    const parser = new SseParser();
    parser.push("data: last");
    expect(parser.flush().map((e) => e.data)).toEqual(["last"]);
    expect(parser.flush()).toEqual([]);
  });

  it("keeps the last event id", () => {
    const parser = new SseParser();
    const [first, second] = parser.push("id: 7\ndata: a\n\ndata: b\n\n");
    expect(first.id).toBe("7");
    expect(second.id).toBe("7");
  });
});
