//! POST /v1/completions, OpenAI's legacy text completion, the request:
//! checked into a `CompletionRequest`. Every field of OpenAI's API is either
//! honoured or refused with a 400 that says why.

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");
const inputs = @import("../inputs.zig");
const chat_request = @import("../chat/request.zig");

const Diagnostic = shared.api_error.Diagnostic;
const Input = inputs.Input;
const Value = std.json.Value;

/// OpenAI's range for `logprobs` on this endpoint.
pub const max_logprobs = 5;

/// Choices per prompt; they generate in waves of the host's decoding slots.
pub const max_choices = 16;

pub const default_max_tokens = 16;

pub const CompletionRequest = struct {
    arena: std.heap.ArenaAllocator,
    model: ?[]const u8 = null,
    prompts: []Input = &.{},
    stream: bool = false,
    include_usage: bool = false,
    max_tokens: u32 = default_max_tokens,
    temperature: ?f64 = null,
    top_p: ?f64 = null,
    seed: ?i64 = null,
    presence_penalty: ?f64 = null,
    frequency_penalty: ?f64 = null,
    stop: []const []const u8 = &.{},
    echo: bool = false,
    /// null: no logprobs; K: the chosen token's and the K most likely.
    logprobs: ?u32 = null,
    /// `{"id":bias,...}`, checked, as the host's `logit-bias` takes it.
    logit_bias: ?[]const u8 = null,
    n: u32 = 1,

    pub fn deinit(self: *CompletionRequest) void {
        self.arena.deinit();
    }
};

/// Parses and checks a completions request. Every field of OpenAI's API is
/// either honoured or refused with a 400 that says why; fields unknown to
/// the API are ignored, as on the chat route.
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !CompletionRequest {
    var req = CompletionRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();
    const obj = try fields.parseObject(arena, body, diag);

    req.model = try fields.optString(obj, "model", diag);
    req.prompts = try inputs.parseInputs(arena, obj.get("prompt"), "prompt", diag);
    req.stream = (try fields.optBool(obj, "stream", diag)) orelse false;
    if (obj.get("stream_options")) |options| switch (options) {
        .null => {},
        .object => |o| req.include_usage = (try fields.optBool(o, "include_usage", diag)) orelse false,
        else => return fields.typeError(diag, "stream_options", "an object", options),
    };
    if (try fields.optInteger(obj, "max_tokens", diag)) |max| {
        if (max < 0) return diag.set(400, "max_tokens", null, "Invalid 'max_tokens': {d}. It must be at least 0.", .{max});
        req.max_tokens = @intCast(@min(max, std.math.maxInt(u32)));
    }
    req.temperature = try fields.optNumberIn(obj, "temperature", 0, 2, diag);
    req.top_p = try fields.optNumberIn(obj, "top_p", 0, 1, diag);
    req.presence_penalty = try fields.optNumberIn(obj, "presence_penalty", -2, 2, diag);
    req.frequency_penalty = try fields.optNumberIn(obj, "frequency_penalty", -2, 2, diag);
    req.seed = try fields.optInteger(obj, "seed", diag);
    req.stop = try chat_request.parseStop(arena, obj.get("stop"), diag);
    req.echo = (try fields.optBool(obj, "echo", diag)) orelse false;
    _ = try fields.optString(obj, "user", diag);

    if (try fields.optInteger(obj, "logprobs", diag)) |k| {
        if (k < 0 or k > max_logprobs)
            return diag.set(400, "logprobs", null, "Invalid 'logprobs': {d}. It must be between 0 and {d}.", .{ k, max_logprobs });
        req.logprobs = @intCast(k);
    }
    if (req.echo and req.logprobs != null)
        return diag.set(400, "echo", null, "'echo' together with 'logprobs' is not supported: this server gives the log-probabilities of generated tokens only, not of the prompt's. Drop one of them.", .{});
    req.logit_bias = try parseLogitBias(arena, obj.get("logit_bias"), diag);

    if (try fields.optInteger(obj, "n", diag)) |n| {
        if (n < 1 or n > max_choices)
            return diag.set(400, "n", null, "Invalid 'n': {d}. This server generates from 1 to {d} choices per prompt.", .{ n, max_choices });
        req.n = @intCast(n);
    }
    if (try fields.optInteger(obj, "best_of", diag)) |best_of| {
        if (best_of < req.n)
            return diag.set(400, "best_of", null, "'best_of' ({d}) must be at least 'n' ({d}).", .{ best_of, req.n });
        if (best_of > req.n)
            return diag.set(400, "best_of", null, "'best_of' greater than 'n' is not supported: this server does not generate extra candidates to rank them. Leave 'best_of' out or set it to 'n'.", .{});
    }
    if (try fields.optString(obj, "suffix", diag)) |suffix| if (suffix.len > 0)
        return diag.set(400, "suffix", null, "'suffix' is not supported: this server does not insert text between a prompt and a suffix (fill-in-the-middle). Leave 'suffix' out.", .{});
    return req;
}

/// `{"50256": -100}` keys are token ids, values from -100 (ban) to 100.
fn parseLogitBias(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) !?[]const u8 {
    const v = value orelse return null;
    if (v == .null) return null;
    if (v != .object) return fields.typeError(diag, "logit_bias", "an object mapping token ids to biases", v);
    if (v.object.count() == 0) return null;
    var out = std.ArrayList(u8).init(arena);
    const w = out.writer();
    try w.writeByte('{');
    var it = v.object.iterator();
    var first = true;
    while (it.next()) |entry| {
        const id = std.fmt.parseInt(u32, entry.key_ptr.*, 10) catch
            return diag.set(400, "logit_bias", null, "Invalid key in 'logit_bias': '{s}'. Keys are token ids (integers from 0).", .{entry.key_ptr.*});
        const bias: f64 = switch (entry.value_ptr.*) {
            .integer => |i| @floatFromInt(i),
            .float => |f| f,
            else => |other| return fields.typeError(diag, "logit_bias", "numbers as values", other),
        };
        if (!(bias >= -100 and bias <= 100))
            return diag.set(400, "logit_bias", null, "Invalid bias for token {d} in 'logit_bias': {d}. Biases are from -100 to 100.", .{ id, bias });
        if (!first) try w.writeByte(',');
        first = false;
        try w.print("\"{d}\":{d}", .{ id, bias });
    }
    try w.writeByte('}');
    return out.items;
}

const testing = std.testing;

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    try shared.test_support.expectInvalid(parseRequest, body, 400, param, message_part);
}

test "a full completions request is parsed" {
    var diag = Diagnostic{};
    var req = try parseRequest(testing.allocator,
        \\{"model":"m","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true},"max_tokens":9,"temperature":0.5,
        \\"top_p":1,"seed":3,"presence_penalty":0.5,"frequency_penalty":-1,"stop":["x"],"logprobs":2,"logit_bias":{"7":-100,"8":2.5},
        \\"n":2,"best_of":2,"suffix":"","user":"u","unknown":1}
    , &diag);
    defer req.deinit();
    try testing.expectEqualStrings("m", req.model.?);
    try testing.expectEqual(@as(usize, 2), req.prompts.len);
    try testing.expect(req.stream and req.include_usage);
    try testing.expectEqual(@as(u32, 9), req.max_tokens);
    try testing.expectEqual(@as(?u32, 2), req.logprobs);
    try testing.expectEqual(@as(u32, 2), req.n);
    try testing.expectEqualStrings("{\"7\":-100,\"8\":2.5}", req.logit_bias.?);

    var defaults = try parseRequest(testing.allocator, "{\"prompt\":[1,2]}", &diag);
    defer defaults.deinit();
    try testing.expectEqual(@as(u32, default_max_tokens), defaults.max_tokens);
    try testing.expectEqualSlices(u32, &.{ 1, 2 }, defaults.prompts[0].tokens);
    try testing.expect(defaults.logit_bias == null and defaults.logprobs == null and !defaults.echo);
}

test "completions requests the API refuses, each naming its field" {
    try expectInvalid("{}", "prompt", "Missing required parameter: 'prompt'");
    try expectInvalid("{\"prompt\":\"\"}", "prompt", "empty string");
    try expectInvalid("{\"prompt\":[[]]}", "prompt[0]", "empty array");
    try expectInvalid("{\"prompt\":\"a\",\"suffix\":\"b\"}", "suffix", "fill-in-the-middle");
    try expectInvalid("{\"prompt\":\"a\",\"best_of\":3}", "best_of", "does not generate extra candidates");
    try expectInvalid("{\"prompt\":\"a\",\"n\":2,\"best_of\":1}", "best_of", "at least 'n'");
    try expectInvalid("{\"prompt\":\"a\",\"n\":0}", "n", "from 1 to 16");
    try expectInvalid("{\"prompt\":\"a\",\"n\":17}", "n", "from 1 to 16");
    try expectInvalid("{\"prompt\":\"a\",\"logprobs\":6}", "logprobs", "between 0 and 5");
    try expectInvalid("{\"prompt\":\"a\",\"logprobs\":true}", "logprobs", "expected an integer");
    try expectInvalid("{\"prompt\":\"a\",\"echo\":true,\"logprobs\":1}", "echo", "not of the prompt's");
    try expectInvalid("{\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}", "logit_bias", "'x'");
    try expectInvalid("{\"prompt\":\"a\",\"logit_bias\":{\"1\":101}}", "logit_bias", "from -100 to 100");
    try expectInvalid("{\"prompt\":\"a\",\"logit_bias\":{\"1\":\"a\"}}", "logit_bias", "numbers as values");
    try expectInvalid("{\"prompt\":\"a\",\"logit_bias\":[1]}", "logit_bias", "expected an object");
    try expectInvalid("{\"prompt\":\"a\",\"max_tokens\":-1}", "max_tokens", "at least 0");
    try expectInvalid("{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}", "stop", "at most 4");
    try expectInvalid("{\"prompt\":\"a\",\"temperature\":9}", "temperature", "between 0 and 2");
    try expectInvalid("{\"prompt\":\"a\",\"echo\":1}", "echo", "expected a boolean");
}
