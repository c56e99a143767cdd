/** Measures one streamed reply: time to first token, tokens generated and tokens per second. */

import type { Usage } from "./chatstream";
import type { ReplyStats } from "./types";

/** Below this, the time between first and last token is too short to measure a rate over. */
const RATE_SPAN_MS_MIN = 100;

export class ReplyMeter {
  private readonly startMs: number;
  private firstTokenMs: number | null = null;
  private lastTokenMs: number | null = null;
  private deltas = 0;
  private usage: Usage | null = null;
  private finishReason: string | null = null;

  constructor(startMs: number) {
    this.startMs = startMs;
  }

  delta(nowMs: number): void {
    if (this.firstTokenMs === null) this.firstTokenMs = nowMs;
    this.lastTokenMs = nowMs;
    this.deltas++;
  }

  setUsage(usage: Usage): void {
    this.usage = usage;
  }

  finish(reason: string): void {
    this.finishReason = reason;
  }

  stats(): ReplyStats {
    // Servers usually send one token per chunk; the usage chunk, when present, is exact.
    const completionTokens = this.usage ? this.usage.completionTokens : this.deltas;
    const ttftMs = this.firstTokenMs === null ? null : this.firstTokenMs - this.startMs;
    let tokensPerSecond: number | null = null;
    if (this.firstTokenMs !== null && this.lastTokenMs !== null && completionTokens > 1) {
      const spanMs = this.lastTokenMs - this.firstTokenMs;
      if (spanMs >= RATE_SPAN_MS_MIN) {
        // The first token's time is in the TTFT; the rate is over the tokens that followed it.
        tokensPerSecond = ((completionTokens - 1) * 1000) / spanMs;
      } else if (this.lastTokenMs > this.startMs) {
        // The reply arrived in one burst (a buffering proxy, a cached answer): a rate over a
        // few milliseconds means nothing, so measure from the request instead.
        tokensPerSecond = (completionTokens * 1000) / (this.lastTokenMs - this.startMs);
      }
    }
    return { completionTokens, exact: this.usage !== null, ttftMs, tokensPerSecond, finishReason: this.finishReason };
  }
}

export function formatStats(stats: ReplyStats): string[] {
  const parts = [`${stats.exact ? "" : "~"}${stats.completionTokens} tokens`];
  if (stats.tokensPerSecond !== null) {
    const rate = stats.tokensPerSecond;
    parts.push(`${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} tok/s`);
  }
  if (stats.ttftMs !== null) parts.push(`TTFT ${formatMs(stats.ttftMs)}`);
  return parts;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
