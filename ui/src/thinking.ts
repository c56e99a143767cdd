/**
 * Separates a thinking model's reasoning from its answer. Servers that parse it themselves
 * send it apart (`delta.reasoning_content`, as llama.cpp's server does); others leave the raw
 * `<think>...</think>` block at the start of `content`, which ThinkSplitter takes apart as the
 * text streams in. Pure: no I/O, tested on its own.
 */

const OPEN = "<think>";
const CLOSE = "</think>";

/**
 * - start: nothing but whitespace yet; the first text decides.
 * - thinking: inside an opened block.
 * - unmarked: text with no opening tag. It is taken as the answer, unless a closing tag comes:
 *   then the chat template opened the block in the prompt, and the text so far was reasoning.
 * - answer: after the block; everything is answer, tags included (the answer may quote them).
 */
type Mode = "start" | "thinking" | "unmarked" | "answer";

/** How many trailing characters of `text` could be the start of `tag` (0 when none). */
function partialTag(text: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, text.length); n > 0; n--) {
    if (text.endsWith(tag.slice(0, n))) return n;
  }
  return 0;
}

/** Splits streamed `content` into reasoning and answer; the tags may arrive in any pieces. */
export class ThinkSplitter {
  private mode: Mode = "start";
  private reasoningText = "";
  private answerText = "";
  /** Text not classified yet: what might be the start of a tag. */
  private pending = "";

  push(text: string): void {
    this.pending += text;
    this.consume(false);
  }

  /** The stream ended: held-back text is what it is, and a block never closed stays reasoning. */
  end(): void {
    this.consume(true);
  }

  get reasoning(): string {
    return this.reasoningText.trim();
  }

  get content(): string {
    return this.answerText;
  }

  /** Inside a think block that has not closed (yet). */
  get thinking(): boolean {
    return this.mode === "thinking";
  }

  /** A think block has closed, so `content` is the answer for certain. */
  get closed(): boolean {
    return this.mode === "answer";
  }

  private consume(final: boolean): void {
    for (;;) {
      if (this.mode === "start") {
        const text = this.pending.trimStart();
        if (text === "") return;
        if (text.startsWith(OPEN)) {
          this.mode = "thinking";
          this.pending = text.slice(OPEN.length);
        } else if (text.startsWith(CLOSE)) {
          this.mode = "answer"; // a template-opened block with no reasoning in it
          this.pending = text.slice(CLOSE.length);
        } else if (!final && (OPEN.startsWith(text) || CLOSE.startsWith(text))) {
          return;
        } else {
          this.mode = "unmarked";
          this.pending = text;
        }
      } else if (this.mode === "thinking" || this.mode === "unmarked") {
        const close = this.pending.indexOf(CLOSE);
        if (close >= 0) {
          const before = this.pending.slice(0, close);
          this.reasoningText = this.mode === "thinking" ? this.reasoningText + before : this.answerText + before;
          this.answerText = "";
          this.pending = this.pending.slice(close + CLOSE.length);
          this.mode = "answer";
          continue;
        }
        const keep = final ? 0 : partialTag(this.pending, CLOSE);
        const settled = this.pending.slice(0, this.pending.length - keep);
        if (this.mode === "thinking") this.reasoningText += settled;
        else this.answerText += settled;
        this.pending = this.pending.slice(settled.length);
        return;
      } else {
        // The whitespace between the block and the answer belongs to neither.
        this.answerText += this.answerText === "" ? this.pending.trimStart() : this.pending;
        this.pending = "";
        return;
      }
    }
  }
}

/**
 * One reply's reasoning and answer, from either shape a server sends, and how long the model
 * thought: from its first token to the first token of the answer (or the end, if it never
 * got to one). Once a server sends `reasoning_content`, it has split the text itself and
 * `content` is all answer.
 */
export class ReplyParts {
  private serverReasoning = "";
  private rawContent = "";
  private readonly splitter = new ThinkSplitter();
  private firstMs: number | null = null;
  private answerMs: number | null = null;
  private endMs: number | null = null;

  reasoningDelta(text: string, nowMs: number): void {
    this.serverReasoning += text;
    this.mark(nowMs);
  }

  contentDelta(text: string, nowMs: number): void {
    this.rawContent += text;
    this.splitter.push(text);
    this.mark(nowMs);
  }

  end(nowMs: number): void {
    this.splitter.end();
    this.endMs = nowMs;
    this.mark(nowMs);
  }

  get reasoning(): string {
    return this.serverReasoning !== "" ? this.serverReasoning.trim() : this.splitter.reasoning;
  }

  get content(): string {
    return this.serverReasoning !== "" ? this.rawContent.trimStart() : this.splitter.content;
  }

  /** How long the model thought, in ms; null when the reply has no reasoning. */
  get thinkingMs(): number | null {
    if (this.reasoning === "" || this.firstMs === null) return null;
    const until = this.answerMs ?? this.endMs;
    return until === null ? null : until - this.firstMs;
  }

  private mark(nowMs: number): void {
    if (this.firstMs === null) this.firstMs = nowMs;
    // Unmarked text may still turn out to be reasoning, so only a settled answer counts.
    const settled = this.serverReasoning !== "" || this.splitter.closed;
    if (this.answerMs === null && settled && this.content !== "" && this.endMs === null) this.answerMs = nowMs;
  }
}

/**
 * Reasoning and answer of a reply kept whole, `<think>` block and all (saved by an older
 * version of this page, or imported): only a block at the very start counts, so an answer
 * that merely mentions the tags is left alone.
 */
export function splitStored(content: string): { reasoning: string; content: string } | null {
  if (!content.trimStart().startsWith(OPEN)) return null;
  const splitter = new ThinkSplitter();
  splitter.push(content);
  splitter.end();
  return { reasoning: splitter.reasoning, content: splitter.content };
}

/** "Thought for 2.4 s", "Thought for 12 s". */
export function formatThought(ms: number): string {
  const seconds = ms / 1000;
  return `Thought for ${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}
