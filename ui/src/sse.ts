/**
 * A Server-Sent Events parser (the WHATWG "event stream" rules) that takes text in arbitrary
 * pieces: a network read may end in the middle of a line, of a CRLF pair or of an event.
 */

export interface SseEvent {
  /** The `event:` field, "message" when absent. */
  event: string;
  /** The `data:` lines of one event, joined with "\n". */
  data: string;
  id?: string;
}

export class SseParser {
  private buffer = "";
  private dataLines: string[] = [];
  private eventName = "";
  private lastId: string | undefined;
  private hasData = false;
  // A chunk that ends in "\r" may be the first half of "\r\n": remember it so that the "\n"
  // opening the next chunk is not taken for a second (empty) line, which would end the event.
  private pendingCR = false;

  /** Feed the next piece of text; returns the events it completed, in order. */
  push(chunk: string): SseEvent[] {
    if (this.pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.pendingCR = false;
    this.buffer += chunk;
    const events: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (ch === "\r") {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === "\n") i++;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
      const event = this.line(line);
      if (event) events.push(event);
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  /**
   * The stream ended. The spec drops an event that lacks its closing blank line, but some
   * servers end the body right after the last `data:` line; keeping it loses nothing.
   */
  flush(): SseEvent[] {
    return this.push("\n\n");
  }

  private line(line: string): SseEvent | null {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment, e.g. a keep-alive ping
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.dataLines.push(value);
        this.hasData = true;
        break;
      case "event":
        this.eventName = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      default:
        break; // "retry" and unknown fields do not concern a fetch-based reader
    }
    return null;
  }

  private dispatch(): SseEvent | null {
    const event: SseEvent | null = this.hasData
      ? { event: this.eventName || "message", data: this.dataLines.join("\n"), id: this.lastId }
      : null;
    this.dataLines = [];
    this.hasData = false;
    this.eventName = "";
    return event;
  }
}
