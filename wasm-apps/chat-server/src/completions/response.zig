//! POST /v1/completions, the response JSON: `text_completion` objects and
//! chunks, and the legacy logprobs (tokens, token_logprobs, top_logprobs,
//! text_offset) read from the host's per-token JSON.

const std = @import("std");
const chat_response = @import("../chat/response.zig");
const Finish = @import("../generation.zig").Finish;

const Value = std.json.Value;

/// One logprobs entry: a generated token.
pub const TokenLogprob = struct {
    token: []const u8,
    logprob: f64,
    /// `{"token":logprob,...}`, serialized.
    top: []const u8,
    text_offset: usize,
};

/// The host's JSON for one token (`{"token","bytes","logprob","top_logprobs":[...]}`)
/// as a logprobs entry; null when it is not that shape.
pub fn parseTokenLogprob(arena: std.mem.Allocator, json: []const u8, offset: usize) !?struct { entry: TokenLogprob, n_bytes: usize } {
    const v = std.json.parseFromSliceLeaky(Value, arena, json, .{}) catch return null;
    if (v != .object) return null;
    const token = v.object.get("token") orelse return null;
    const logprob = number(v.object.get("logprob")) orelse return null;
    if (token != .string) return null;
    const n_bytes = if (v.object.get("bytes")) |b| if (b == .array) b.array.items.len else token.string.len else token.string.len;

    var top = std.ArrayList(u8).init(arena);
    const w = top.writer();
    try w.writeByte('{');
    var seen = std.StringHashMap(void).init(arena);
    if (v.object.get("top_logprobs")) |list| if (list == .array) for (list.array.items) |alt| {
        if (alt != .object) continue;
        const alt_token = alt.object.get("token") orelse continue;
        const alt_logprob = number(alt.object.get("logprob")) orelse continue;
        if (alt_token != .string) continue;
        // Two tokens may read the same (lossy UTF-8): a JSON object keeps one.
        if ((try seen.getOrPut(alt_token.string)).found_existing) continue;
        if (seen.count() > 1) try w.writeByte(',');
        try std.json.encodeJsonString(alt_token.string, .{}, w);
        try w.writeByte(':');
        try appendLogprob(w, alt_logprob);
    };
    // The chosen token is always there, as OpenAI has it ("up to logprobs+1").
    if (!(try seen.getOrPut(token.string)).found_existing) {
        if (seen.count() > 1) try w.writeByte(',');
        try std.json.encodeJsonString(token.string, .{}, w);
        try w.writeByte(':');
        try appendLogprob(w, logprob);
    }
    try w.writeByte('}');
    return .{ .entry = .{ .token = token.string, .logprob = logprob, .top = top.items, .text_offset = offset }, .n_bytes = n_bytes };
}

fn number(value: ?Value) ?f64 {
    const v = value orelse return null;
    return switch (v) {
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        else => null,
    };
}

/// A log-probability as a JSON number; -inf (a banned token) has none, so the
/// lowest finite double stands in for it.
pub fn appendLogprob(w: anytype, x: f64) !void {
    const finite = if (std.math.isFinite(x)) x else if (x < 0) -std.math.floatMax(f64) else 0;
    try w.print("{d}", .{finite});
}

/// The fields every `text_completion` object and chunk starts with.
pub fn appendEnvelope(w: anytype, env: chat_response.Envelope) !void {
    try chat_response.appendEnvelope(w, env, "text_completion");
}

pub fn appendChoice(w: anytype, index: usize, text: []const u8, logprobs: ?[]const TokenLogprob, finish: ?Finish) !void {
    try w.writeAll("{\"text\":");
    try std.json.encodeJsonString(text, .{}, w);
    try w.print(",\"index\":{d},\"logprobs\":", .{index});
    if (logprobs) |entries| {
        try w.writeAll("{\"tokens\":[");
        for (entries, 0..) |e, i| {
            if (i > 0) try w.writeByte(',');
            try std.json.encodeJsonString(e.token, .{}, w);
        }
        try w.writeAll("],\"token_logprobs\":[");
        for (entries, 0..) |e, i| {
            if (i > 0) try w.writeByte(',');
            try appendLogprob(w, e.logprob);
        }
        try w.writeAll("],\"top_logprobs\":[");
        for (entries, 0..) |e, i| {
            if (i > 0) try w.writeByte(',');
            try w.writeAll(e.top);
        }
        try w.writeAll("],\"text_offset\":[");
        for (entries, 0..) |e, i| {
            if (i > 0) try w.writeByte(',');
            try w.print("{d}", .{e.text_offset});
        }
        try w.writeAll("]}");
    } else try w.writeAll("null");
    try w.writeAll(",\"finish_reason\":");
    if (finish) |f| try w.print("\"{s}\"", .{@tagName(f)}) else try w.writeAll("null");
    try w.writeByte('}');
}

pub fn appendUsage(w: anytype, prompt_tokens: u64, completion_tokens: u64) !void {
    try w.print("\"usage\":{{\"prompt_tokens\":{d},\"completion_tokens\":{d},\"total_tokens\":{d}}}", .{ prompt_tokens, completion_tokens, prompt_tokens + completion_tokens });
}
