import { describe, expect, it } from "vitest";
import { formatStats, ReplyMeter } from "../src/stats";

describe("ReplyMeter", () => {
  it("measures time to first token and the rate after it, with the usage count", () => {
    const meter = new ReplyMeter(1000);
    meter.delta(1250); // first token 250 ms after sending
    meter.delta(1300);
    meter.delta(1450); // 200 ms after the first: long enough to measure a rate over
    meter.setUsage({ promptTokens: 5, completionTokens: 5 });
    meter.finish("stop");
    // 4 tokens after the first, over 200 ms.
    expect(meter.stats()).toEqual({
      completionTokens: 5,
      exact: true,
      ttftMs: 250,
      tokensPerSecond: 20,
      finishReason: "stop",
    });
  });

  it("counts chunks when the server sends no usage, and says so", () => {
    const meter = new ReplyMeter(0);
    meter.delta(100);
    meter.delta(300);
    const stats = meter.stats();
    expect(stats.completionTokens).toBe(2);
    expect(stats.exact).toBe(false);
    expect(formatStats(stats)).toEqual(["~2 tokens", "5.0 tok/s", "TTFT 100 ms"]);
  });

  it("has no rate and no TTFT before any token", () => {
    const stats = new ReplyMeter(0).stats();
    expect(stats.ttftMs).toBeNull();
    expect(stats.tokensPerSecond).toBeNull();
    expect(formatStats({ ...stats, ttftMs: 1534 })).toContain("TTFT 1.53 s");
  });
});

describe("ReplyMeter with a burst", () => {
  it("measures the rate from the request when all tokens arrive at once", () => {
    const meter = new ReplyMeter(0);
    for (let i = 0; i < 40; i++) meter.delta(200 + i * 0.01);
    meter.setUsage({ promptTokens: 1, completionTokens: 40 });
    const stats = meter.stats();
    expect(stats.tokensPerSecond).toBeCloseTo(200, 0); // 40 tokens over 200 ms, not over 0.4 ms
    expect(formatStats(stats)[1]).toBe("200 tok/s");
  });
});
