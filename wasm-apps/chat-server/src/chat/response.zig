//! OpenAI's chat completion shapes as JSON: the whole `chat.completion`, the
//! `chat.completion.chunk` events of a stream, and the usage chunk.

const std = @import("std");
const shared = @import("shared");
const template_request = shared.template_request;
const generation = @import("../generation.zig");
const completion = @import("completion.zig");

const Finish = generation.Finish;
const Usage = completion.Usage;
const Choice = completion.Choice;
const Value = std.json.Value;

/// What every response and chunk of one completion shares.
pub const Envelope = struct {
    id: []const u8,
    created: i64,
    model: []const u8,
    system_fingerprint: []const u8,
};

pub const Delta = union(enum) {
    /// The first chunk: the role, and no text yet.
    role,
    /// The first chunk when the answer may be function calls: content null.
    role_null,
    content: []const u8,
    /// The first delta of a function call: its id and name, arguments "".
    call_start: struct { index: u32, id: []const u8, name: []const u8 },
    /// More of a call's arguments (JSON text, as generated).
    call_arguments: struct { index: u32, fragment: []const u8 },
    /// Thinking, apart from the answer: `{"reasoning_content":...}`.
    reasoning: []const u8,
    /// The last choice chunk, next to its finish_reason.
    empty,
};

pub fn appendEnvelope(w: anytype, env: Envelope, object: []const u8) !void {
    try w.writeAll("{\"id\":");
    try std.json.encodeJsonString(env.id, .{}, w);
    try w.print(",\"object\":\"{s}\",\"created\":{d},\"model\":", .{ object, env.created });
    try std.json.encodeJsonString(env.model, .{}, w);
    try w.writeAll(",\"system_fingerprint\":");
    try std.json.encodeJsonString(env.system_fingerprint, .{}, w);
}

fn appendUsage(w: anytype, usage: Usage) !void {
    try w.print("\"usage\":{{\"prompt_tokens\":{d},\"completion_tokens\":{d},\"total_tokens\":{d}," ++
        "\"prompt_tokens_details\":{{\"cached_tokens\":{d}}}}}", .{
        usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens, usage.cached_tokens,
    });
}

/// `"timings":{...}` as llama-server writes them (the draft counts only when
/// something was drafted).
fn appendTimings(w: anytype, t: shared.nn.Timings) !void {
    try w.print("\"timings\":{{\"prompt_n\":{d},\"prompt_ms\":{d:.3},\"prompt_per_second\":{d:.3},\"predicted_n\":{d},\"predicted_ms\":{d:.3},\"predicted_per_second\":{d:.3}", .{
        t.prompt_n, t.prompt_ms, perSecond(t.prompt_n, t.prompt_ms), t.predicted_n, t.predicted_ms, perSecond(t.predicted_n, t.predicted_ms),
    });
    if (t.draft_n > 0) try w.print(",\"draft_n\":{d},\"draft_n_accepted\":{d}", .{ t.draft_n, t.draft_n_accepted });
    try w.writeByte('}');
}

fn perSecond(n: u32, ms: f64) f64 {
    return if (ms > 0) @as(f64, @floatFromInt(n)) * 1000 / ms else 0;
}

/// One SSE event `data: {chat.completion.chunk}\n\n` with a single choice.
pub fn appendChunk(out: *std.ArrayList(u8), env: Envelope, delta: Delta, finish: ?Finish) !void {
    return appendChoiceChunk(out, env, 0, delta, null, finish, null);
}

/// A chunk of choice `index`; `logprobs` is a JSON array of the host's
/// entries for the tokens behind this delta.
pub fn appendChoiceChunk(out: *std.ArrayList(u8), env: Envelope, index: u32, delta: Delta, logprobs: ?[]const u8, finish: ?Finish, timings: ?shared.nn.Timings) !void {
    const w = out.writer();
    try w.writeAll("data: ");
    try appendEnvelope(w, env, "chat.completion.chunk");
    try w.print(",\"choices\":[{{\"index\":{d},\"delta\":", .{index});
    switch (delta) {
        .role => try w.writeAll("{\"role\":\"assistant\",\"content\":\"\"}"),
        .role_null => try w.writeAll("{\"role\":\"assistant\",\"content\":null}"),
        .content => |text| {
            try w.writeAll("{\"content\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
        .call_start => |c| {
            try w.print("{{\"tool_calls\":[{{\"index\":{d},\"id\":", .{c.index});
            try std.json.encodeJsonString(c.id, .{}, w);
            try w.writeAll(",\"type\":\"function\",\"function\":{\"name\":");
            try std.json.encodeJsonString(c.name, .{}, w);
            try w.writeAll(",\"arguments\":\"\"}}]}");
        },
        .call_arguments => |c| {
            try w.print("{{\"tool_calls\":[{{\"index\":{d},\"function\":{{\"arguments\":", .{c.index});
            try std.json.encodeJsonString(c.fragment, .{}, w);
            try w.writeAll("}}]}");
        },
        .reasoning => |text| {
            try w.writeAll("{\"reasoning_content\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
        .empty => try w.writeAll("{}"),
    }
    try w.writeAll(",\"logprobs\":");
    try appendLogprobs(out.allocator, w, logprobs);
    try w.writeAll(",\"finish_reason\":");
    if (finish) |f| try w.print("\"{s}\"", .{@tagName(f)}) else try w.writeAll("null");
    try w.writeAll("}]");
    if (timings) |t| {
        try w.writeByte(',');
        try appendTimings(w, t);
    }
    try w.writeAll("}\n\n");
}

/// `{"content":[{token,logprob,bytes,top_logprobs}],"refusal":null}` from the
/// host's entries (which also carry token ids), or `null`.
fn appendLogprobs(allocator: std.mem.Allocator, w: anytype, entries: ?[]const u8) !void {
    const json = entries orelse return w.writeAll("null");
    var arena = std.heap.ArenaAllocator.init(allocator);
    defer arena.deinit();
    const parsed = std.json.parseFromSliceLeaky(Value, arena.allocator(), json, .{}) catch return w.writeAll("null");
    if (parsed != .array) return w.writeAll("null");
    try w.writeAll("{\"content\":[");
    for (parsed.array.items, 0..) |entry, i| {
        if (i > 0) try w.writeByte(',');
        try appendTokenLogprob(w, entry, true);
    }
    try w.writeAll("],\"refusal\":null}");
}

fn appendTokenLogprob(w: anytype, entry: Value, with_top: bool) !void {
    if (entry != .object) return w.writeAll("{\"token\":\"\",\"logprob\":-9999.0,\"bytes\":null,\"top_logprobs\":[]}");
    const o = entry.object;
    try w.writeAll("{\"token\":");
    const token = o.get("token") orelse Value{ .string = "" };
    try std.json.encodeJsonString(if (token == .string) token.string else "", .{}, w);
    try w.writeAll(",\"logprob\":");
    const lp = o.get("logprob") orelse Value{ .float = 0 };
    switch (lp) {
        .integer => |x| try w.print("{d}", .{x}),
        .float => |x| if (std.math.isFinite(x)) try w.print("{d}", .{x}) else try w.writeAll("-9999.0"),
        else => try w.writeAll("-9999.0"),
    }
    try w.writeAll(",\"bytes\":");
    if (o.get("bytes")) |b| try std.json.stringify(b, .{}, w) else try w.writeAll("null");
    if (with_top) {
        try w.writeAll(",\"top_logprobs\":[");
        if (o.get("top_logprobs")) |top| if (top == .array) for (top.array.items, 0..) |t, i| {
            if (i > 0) try w.writeByte(',');
            try appendTokenLogprob(w, t, false);
        };
        try w.writeByte(']');
    }
    try w.writeByte('}');
}

/// The SSE event with `"choices":[]` and the usage (stream_options.include_usage).
pub fn appendUsageChunk(out: *std.ArrayList(u8), env: Envelope, usage: Usage) !void {
    const w = out.writer();
    try w.writeAll("data: ");
    try appendEnvelope(w, env, "chat.completion.chunk");
    try w.writeAll(",\"choices\":[],");
    try appendUsage(w, usage);
    if (usage.timings) |t| {
        try w.writeByte(',');
        try appendTimings(w, t);
    }
    try w.writeAll("}\n\n");
}

pub const done_event = "data: [DONE]\n\n";

/// A whole `chat.completion` object with one text choice.
pub fn appendCompletion(out: *std.ArrayList(u8), env: Envelope, content: []const u8, finish: Finish, usage: Usage) !void {
    return appendCompletionChoices(out, env, &.{.{ .content = content, .finish = finish }}, usage);
}

/// A whole `chat.completion` object; choice i has index i.
pub fn appendCompletionChoices(out: *std.ArrayList(u8), env: Envelope, choices: []const Choice, usage: Usage) !void {
    const w = out.writer();
    try appendEnvelope(w, env, "chat.completion");
    try w.writeAll(",\"choices\":[");
    for (choices, 0..) |c, i| {
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"index\":{d},\"message\":{{\"role\":\"assistant\",\"content\":", .{i});
        if (c.content) |text| try std.json.encodeJsonString(text, .{}, w) else try w.writeAll("null");
        if (c.reasoning.len > 0) {
            try w.writeAll(",\"reasoning_content\":");
            try std.json.encodeJsonString(c.reasoning, .{}, w);
        }
        if (c.tool_calls.len > 0) {
            try w.writeAll(",\"tool_calls\":");
            try template_request.appendToolCalls(w, c.tool_calls);
        }
        try w.writeAll("},\"logprobs\":");
        try appendLogprobs(out.allocator, w, c.logprobs);
        try w.print(",\"finish_reason\":\"{s}\"}}", .{@tagName(c.finish)});
    }
    try w.writeAll("],");
    try appendUsage(w, usage);
    if (usage.timings) |t| {
        try w.writeByte(',');
        try appendTimings(w, t);
    }
    try w.writeByte('}');
}

const testing = std.testing;

test "chunks and completions are valid JSON in the OpenAI shapes" {
    const env = Envelope{ .id = "chatcmpl-1", .created = 5, .model = "m", .system_fingerprint = "fp" };
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendChunk(&out, env, .{ .content = "a\"b\n" }, null);
    try testing.expectEqualStrings(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"system_fingerprint\":\"fp\"," ++
            "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\\"b\\n\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        out.items,
    );
    out.clearRetainingCapacity();
    try appendCompletion(&out, env, "hi", .length, .{ .prompt_tokens = 3, .completion_tokens = 2 });
    const parsed = try std.json.parseFromSlice(Value, testing.allocator, out.items, .{});
    defer parsed.deinit();
    const usage = parsed.value.object.get("usage").?.object;
    try testing.expectEqual(@as(i64, 5), usage.get("total_tokens").?.integer);
    const choice = parsed.value.object.get("choices").?.array.items[0].object;
    try testing.expectEqualStrings("length", choice.get("finish_reason").?.string);
}
