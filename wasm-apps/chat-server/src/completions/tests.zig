//! /v1/completions end to end against scripted contexts: the prompts raw,
//! `n` choices on their own contexts in waves of the host's slots, echo,
//! logprobs, streams and failures.

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const completion = @import("completion.zig");

const nn = shared.nn;
const Diagnostic = shared.api_error.Diagnostic;
const Config = completion.Config;
const Value = std.json.Value;
const complete = completion.complete;
const parseRequest = request.parseRequest;

const testing = std.testing;

const support = shared.test_support;

/// What the fake contexts of one request did, in order, one line each.
const Calls = std.ArrayList(u8);

/// A scripted context: it generates `tokens` in order (then ends), counts
/// one prompt token per four prompt bytes (or one per id), answers logprobs
/// for each token, and logs every call to the shared `calls`.
const FakeBackend = struct {
    calls: *Calls,
    tokens: []const []const u8,
    ctx: u32 = 0,
    forks: *u32,
    fail_at: ?usize = null,
    refuse_metadata: bool = false,
    next_index: usize = 0,
    prompt_tokens: usize = 0,

    const Error = nn.Error || std.mem.Allocator.Error;

    fn record(self: *FakeBackend, comptime fmt: []const u8, args: anytype) void {
        self.calls.writer().print("{d} " ++ fmt ++ "\n", .{self.ctx} ++ args) catch unreachable;
    }

    pub fn fork(self: *const FakeBackend) Error!FakeBackend {
        self.forks.* += 1;
        var copy = self.*;
        copy.ctx = self.forks.*;
        copy.next_index = 0;
        return copy;
    }

    pub fn setMetadata(self: *FakeBackend, json: []const u8) Error!void {
        if (self.refuse_metadata) return error.InvalidInput;
        self.record("metadata {s}", .{json});
    }

    pub fn setPrompt(self: *FakeBackend, prompt: []const u8) Error!void {
        if (prompt.len > 4000) return error.PromptTooLong;
        self.record("prompt {s}", .{prompt});
        self.prompt_tokens = prompt.len / 4;
        self.next_index = 0;
    }

    pub fn setPromptTokens(self: *FakeBackend, tokens: []const u32) Error!void {
        for (tokens) |t| if (t > 1000) return error.InvalidInput;
        self.record("tokens {any}", .{tokens});
        self.prompt_tokens = tokens.len;
        self.next_index = 0;
    }

    pub fn info(self: *FakeBackend, allocator: std.mem.Allocator) Error!std.json.Parsed(nn.Info) {
        return support.infoOf(allocator, "{{\"input_tokens\":{d},\"llama_build_number\":7}}", .{self.prompt_tokens});
    }

    pub fn output(self: *FakeBackend, allocator: std.mem.Allocator, index: u32, _: usize) Error![]u8 {
        std.debug.assert(index == 3);
        return std.fmt.allocPrint(allocator, "<{d} tokens>", .{self.prompt_tokens});
    }

    pub fn next(self: *FakeBackend) Error!nn.Step {
        if (self.fail_at) |at| if (self.next_index == at) return error.BackendFailed;
        if (self.next_index >= self.tokens.len) return .{ .end = .stop };
        defer self.next_index += 1;
        self.record("next", .{});
        return .{ .token = self.tokens[self.next_index] };
    }

    pub fn tokenLogprobs(self: *FakeBackend, allocator: std.mem.Allocator) Error![]u8 {
        const token = self.tokens[self.next_index - 1];
        return std.fmt.allocPrint(allocator, "{{\"id\":{d},\"token\":\"{s}\",\"bytes\":{any},\"logprob\":-0.5,\"top_logprobs\":[" ++
            "{{\"id\":{d},\"token\":\"{s}\",\"logprob\":-0.5}},{{\"id\":99,\"token\":\"alt\",\"logprob\":-1.25}}]}}", .{ self.next_index, token, std.json.fmt(token, .{ .emit_strings_as_arrays = true }), self.next_index, token });
    }

    pub fn finish(self: *FakeBackend) void {
        self.record("finish", .{});
    }
};

const TestRun = struct {
    out: std.ArrayList(u8),
    calls: Calls,
    forks: u32 = 0,
    diag: Diagnostic = .{},
    result: anyerror!void = {},

    fn deinit(self: *TestRun) void {
        self.out.deinit();
        self.calls.deinit();
    }

    fn json(self: *const TestRun) !std.json.Parsed(Value) {
        return support.responseJson(self.out.items);
    }

    /// The SSE events' data, without the `data: ` prefix.
    fn events(self: *const TestRun, list: *std.ArrayList([]const u8)) !void {
        var it = std.mem.splitSequence(u8, support.responseBody(self.out.items), "\n\n");
        while (it.next()) |e| if (e.len > 0) try list.append(e["data: ".len..]);
    }
};

const test_cfg = Config{ .model_id = "tiny", .ctx_size = 1000, .created = 1, .id = "cmpl-x", .random_seed = 100 };

fn runWith(r: *TestRun, tokens: []const []const u8, body: []const u8, options: struct { fail_at: ?usize = null, refuse_metadata: bool = false, cfg: Config = test_cfg }) !void {
    var parse_diag = Diagnostic{};
    var req = try parseRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    var backend = FakeBackend{ .calls = &r.calls, .tokens = tokens, .forks = &r.forks, .fail_at = options.fail_at, .refuse_metadata = options.refuse_metadata };
    r.result = complete(testing.allocator, &backend, r.out.writer(), &req, options.cfg, &r.diag);
}

fn newRun() TestRun {
    return .{ .out = std.ArrayList(u8).init(testing.allocator), .calls = Calls.init(testing.allocator) };
}

test "a completion uses the prompt raw and stops at max_tokens" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{ "Hel", "lo", " wor", "ld" }, "{\"prompt\":\"Say \\\"hi\\\"\",\"max_tokens\":3,\"temperature\":0}", .{});
    try r.result;
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 prompt Say \"hi\"\n") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 metadata {\"n-predict\":3,\"temp\":0}\n") != null);
    const parsed = try r.json();
    defer parsed.deinit();
    const root = parsed.value.object;
    try testing.expectEqualStrings("text_completion", root.get("object").?.string);
    try testing.expectEqualStrings("cmpl-x", root.get("id").?.string);
    try testing.expectEqualStrings("fp_llamaedge_b7", root.get("system_fingerprint").?.string);
    const choice = root.get("choices").?.array.items[0].object;
    try testing.expectEqualStrings("Hello wor", choice.get("text").?.string);
    try testing.expectEqualStrings("length", choice.get("finish_reason").?.string);
    try testing.expect(choice.get("logprobs").? == .null);
    const usage = root.get("usage").?.object;
    try testing.expectEqual(@as(i64, 2), usage.get("prompt_tokens").?.integer);
    try testing.expectEqual(@as(i64, 3), usage.get("completion_tokens").?.integer);
    try testing.expectEqual(@as(i64, 5), usage.get("total_tokens").?.integer);
}

test "n choices run on their own contexts, in turn, with seeds seed+i, indexed prompt*n+i" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{ "a", "b" }, "{\"prompt\":[\"p0\",\"p1\"],\"n\":2,\"seed\":10}", .{});
    try r.result;
    try testing.expectEqual(@as(u32, 1), r.forks);
    // the two contexts alternate token by token
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 next\n1 next\n0 next\n1 next\n") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 metadata {\"n-predict\":16,\"seed\":10}\n") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "1 metadata {\"n-predict\":16,\"seed\":11}\n") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "1 prompt p1\n") != null);
    const parsed = try r.json();
    defer parsed.deinit();
    const choices = parsed.value.object.get("choices").?.array.items;
    try testing.expectEqual(@as(usize, 4), choices.len);
    for (choices, 0..) |c, i| {
        try testing.expectEqual(@as(i64, @intCast(i)), c.object.get("index").?.integer);
        try testing.expectEqualStrings("ab", c.object.get("text").?.string);
        try testing.expectEqualStrings("stop", c.object.get("finish_reason").?.string);
    }
    try testing.expectEqual(@as(i64, 8), parsed.value.object.get("usage").?.object.get("completion_tokens").?.integer);
}

test "n > 1 without a seed still gives each choice its own seed" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{"a"}, "{\"prompt\":\"p\",\"n\":3}", .{});
    try r.result;
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "\"seed\":100}") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "\"seed\":101}") != null);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "\"seed\":102}") != null);
}

test "token prompts go to the host as ids, and echo shows their text" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{"x"}, "{\"prompt\":[[1,2,3]],\"echo\":true}", .{});
    try r.result;
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 tokens { 1, 2, 3 }\n") != null);
    const parsed = try r.json();
    defer parsed.deinit();
    const choice = parsed.value.object.get("choices").?.array.items[0].object;
    try testing.expectEqualStrings("<3 tokens>x", choice.get("text").?.string);

    var text = newRun();
    defer text.deinit();
    try runWith(&text, &.{"!"}, "{\"prompt\":\"Hi\",\"echo\":true}", .{});
    try text.result;
    const p2 = try text.json();
    defer p2.deinit();
    try testing.expectEqualStrings("Hi!", p2.value.object.get("choices").?.array.items[0].object.get("text").?.string);
}

test "logprobs list tokens, their logprobs, the top alternatives with the chosen one, and offsets" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{ "ab", "c" }, "{\"prompt\":\"p\",\"logprobs\":1}", .{});
    try r.result;
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "\"logprobs\":true,\"top-logprobs\":1") != null);
    const parsed = try r.json();
    defer parsed.deinit();
    const lp = parsed.value.object.get("choices").?.array.items[0].object.get("logprobs").?.object;
    try testing.expectEqual(@as(usize, 2), lp.get("tokens").?.array.items.len);
    try testing.expectEqualStrings("c", lp.get("tokens").?.array.items[1].string);
    try testing.expectEqual(@as(f64, -0.5), lp.get("token_logprobs").?.array.items[0].float);
    const top = lp.get("top_logprobs").?.array.items[0].object;
    try testing.expectEqual(@as(f64, -0.5), top.get("ab").?.float);
    try testing.expectEqual(@as(f64, -1.25), top.get("alt").?.float);
    try testing.expectEqual(@as(i64, 0), lp.get("text_offset").?.array.items[0].integer);
    try testing.expectEqual(@as(i64, 2), lp.get("text_offset").?.array.items[1].integer);
}

test "a stream has text chunks per choice, a finish chunk each, usage, and DONE" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{ "a", "S", "TOP", "b" }, "{\"prompt\":\"p\",\"n\":2,\"stream\":true,\"stop\":\"STOP\",\"stream_options\":{\"include_usage\":true}}", .{});
    try r.result;
    try testing.expect(std.mem.startsWith(u8, r.out.items, "Status: 200 OK\nContent-Type: text/event-stream\n"));
    var events = std.ArrayList([]const u8).init(testing.allocator);
    defer events.deinit();
    try r.events(&events);
    // "a" for each choice, then each finishes at the stop string, then usage and DONE
    try testing.expectEqual(@as(usize, 6), events.items.len);
    try testing.expect(std.mem.indexOf(u8, events.items[0], "\"choices\":[{\"text\":\"a\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]") != null);
    try testing.expect(std.mem.indexOf(u8, events.items[1], "{\"text\":\"a\",\"index\":1,") != null);
    try testing.expect(std.mem.indexOf(u8, events.items[2], "{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}") != null);
    try testing.expect(std.mem.indexOf(u8, events.items[3], "\"index\":1,\"logprobs\":null,\"finish_reason\":\"stop\"") != null);
    try testing.expect(std.mem.indexOf(u8, events.items[4], "\"choices\":[],\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":6,") != null);
    try testing.expectEqualStrings("[DONE]", events.items[5]);
    for (events.items[0..5]) |e| try testing.expect(std.mem.startsWith(u8, e, "{\"id\":\"cmpl-x\",\"object\":\"text_completion\""));
}

test "a prompt over the context is refused before anything is generated" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{"a"}, "{\"prompt\":[\"ok\",\"" ++ "y" ** 4001 ++ "\"],\"stream\":true}", .{});
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqualStrings("prompt", r.diag.err.param.?);
    try testing.expectEqualStrings("context_length_exceeded", r.diag.err.code.?);
    try testing.expectEqual(@as(usize, 0), r.out.items.len);
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "next") == null);

    var bad = newRun();
    defer bad.deinit();
    try runWith(&bad, &.{"a"}, "{\"prompt\":[1,5000]}", .{});
    try testing.expectError(error.InvalidRequest, bad.result);
    try testing.expectEqualStrings("prompt", bad.diag.err.param.?);
}

test "a logit_bias the model refuses is a 400 naming logit_bias" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{"a"}, "{\"prompt\":\"p\",\"logit_bias\":{\"5\":1}}", .{ .refuse_metadata = true });
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqualStrings("logit_bias", r.diag.err.param.?);
}

test "a failure in a stream is an error event, then DONE" {
    var r = newRun();
    defer r.deinit();
    try runWith(&r, &.{ "a", "b" }, "{\"prompt\":\"p\",\"stream\":true}", .{ .fail_at = 1 });
    try r.result;
    try testing.expect(std.mem.endsWith(u8, r.out.items, "data: {\"error\":{\"message\":\"The model failed while generating; the server log has the details.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n"));
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 finish\n") != null);
}

test "a client that left stops the completion" {
    var calls = Calls.init(testing.allocator);
    defer calls.deinit();
    var forks: u32 = 0;
    var diag = Diagnostic{};
    var req = try parseRequest(testing.allocator, "{\"prompt\":\"p\",\"stream\":true}", &diag);
    defer req.deinit();
    var backend = FakeBackend{ .calls = &calls, .tokens = &.{ "a", "b" }, .forks = &forks };
    try testing.expectError(error.ClientGone, complete(testing.allocator, &backend, support.FailingWriter{}, &req, test_cfg, &diag));
    try testing.expect(std.mem.indexOf(u8, calls.items, "next") == null);
}

test "choices generate in waves of at most the host's slots" {
    var r = newRun();
    defer r.deinit();
    var cfg = test_cfg;
    cfg.slots = 2;
    try runWith(&r, &.{ "a", "b" }, "{\"prompt\":\"p\",\"n\":3}", .{ .cfg = cfg });
    try r.result;
    // contexts 0 and 1 together, then 2 once both have finished
    try testing.expect(std.mem.indexOf(u8, r.calls.items, "0 next\n1 next\n0 next\n1 next\n0 finish\n1 finish\n2 next\n2 next\n2 finish\n") != null);
    try testing.expectEqual(@as(usize, 3), std.mem.count(u8, r.out.items, "\"text\":\"ab\""));
}
