/** Measures one streamed reply: time to first token, tokens generated and tokens per second. */

import type { Usage } from "./chatstream";
import type { ReplyStats } from "./types";

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
      // The first token's time is in the TTFT; the rate is over the tokens that followed it.
      if (spanMs > 0) tokensPerSecond = ((completionTokens - 1) * 1000) / spanMs;
    }
    return { completionTokens, exact: this.usage !== null, ttftMs, tokensPerSecond, finishReason: this.finishReason };
  }
}

export function formatStats(stats: ReplyStats): string[] {
  const parts = [`${stats.exact ? "" : "~"}${stats.completionTokens} tokens`];
  if (stats.tokensPerSecond !== null) parts.push(`${stats.tokensPerSecond.toFixed(1)} tok/s`);
  if (stats.ttftMs !== null) parts.push(`TTFT ${formatMs(stats.ttftMs)}`);
  return parts;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
