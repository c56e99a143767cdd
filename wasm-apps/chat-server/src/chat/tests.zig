//! The chat path end to end, from a request body to the bytes of the
//! response, against the scripted backend: the prompt and its budget, the
//! token loop, function calls, thinking, `n` choices and logprobs, through
//! the OpenAI output. (The Anthropic output's runs are in anthropic/output.zig.)

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const output = @import("output.zig");
const completion = @import("completion.zig");

const Diagnostic = shared.api_error.Diagnostic;
const Config = completion.Config;
const complete = output.complete;

const testing = std.testing;
const support = shared.test_support;
const FakeBackend = support.FakeBackend;
const Run = support.Run;

fn run(backend: *FakeBackend, body: []const u8, cfg: Config) !Run {
    var r = Run.init();
    errdefer r.deinit();
    var parse_diag = Diagnostic{};
    var req = try request.parseChatRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    r.result = complete(testing.allocator, backend, r.out.writer(), &req, cfg, &r.diag);
    return r;
}

/// Runs a request that must succeed.
fn runOk(backend: *FakeBackend, body: []const u8, cfg: Config) !Run {
    var r = try run(backend, body, cfg);
    errdefer r.deinit();
    try r.result;
    return r;
}

/// A run that succeeded, and its JSON response.
const Answer = struct {
    run: Run,
    json: std.json.Parsed(std.json.Value),

    fn deinit(self: *Answer) void {
        self.json.deinit();
        self.run.deinit();
    }

    fn choice(self: *const Answer, index: usize) std.json.ObjectMap {
        return self.json.value.object.get("choices").?.array.items[index].object;
    }
};

fn runJson(backend: *FakeBackend, body: []const u8, cfg: Config) !Answer {
    var r = try runOk(backend, body, cfg);
    errdefer r.deinit();
    return .{ .run = r, .json = try r.json() };
}

pub const test_cfg = Config{ .model_id = "tiny", .ctx_size = 1000, .template = .chatml, .created = 1, .id = "chatcmpl-x" };

test "a non-streaming completion joins the tokens and counts them" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "Hel", "lo \xC3", "\xA9!" } };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", test_cfg);
    defer a.deinit();
    const choice = a.choice(0);
    try testing.expectEqualStrings("Hello é!", choice.get("message").?.object.get("content").?.string);
    try testing.expectEqualStrings("stop", choice.get("finish_reason").?.string);
    try testing.expectEqual(@as(i64, 3), a.json.value.object.get("usage").?.object.get("completion_tokens").?.integer);
    try testing.expectEqualStrings("fp_llamaedge_b7", a.json.value.object.get("system_fingerprint").?.string);
    try testing.expectEqual(@as(usize, 1), backend.finished);
    // the prompt was set again after the options, which carry the limit
    try testing.expectEqual(@as(usize, 2), backend.prompts_set);
    try testing.expect(std.mem.startsWith(u8, backend.metadata.items, "{\"n-predict\":"));
}

test "a stream has a role chunk, content chunks, a finish chunk, usage, and DONE" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "STO", "P", "c" } };
    defer backend.deinit();
    var r = try runOk(&backend,
        \\{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"stop":"STOP"}
    , test_cfg);
    defer r.deinit();
    const text = r.out.items;
    try testing.expect(std.mem.startsWith(u8, text, "Status: 200 OK\nContent-Type: text/event-stream\n"));
    var events = std.mem.splitSequence(u8, support.responseBody(text), "\n\n");
    var seen = std.ArrayList([]const u8).init(testing.allocator);
    defer seen.deinit();
    while (events.next()) |e| if (e.len > 0) try seen.append(e);
    try testing.expectEqual(@as(usize, 6), seen.items.len);
    try testing.expect(std.mem.indexOf(u8, seen.items[0], "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") != null);
    try testing.expect(std.mem.indexOf(u8, seen.items[1], "\"delta\":{\"content\":\"a\"}") != null);
    try testing.expect(std.mem.indexOf(u8, seen.items[2], "\"delta\":{\"content\":\"b\"}") != null);
    try testing.expect(std.mem.indexOf(u8, seen.items[3], "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"") != null);
    try testing.expect(std.mem.indexOf(u8, seen.items[4], "\"choices\":[],\"usage\":{\"prompt_tokens\":") != null);
    try testing.expect(std.mem.indexOf(u8, seen.items[4], "\"completion_tokens\":4,") != null);
    try testing.expectEqualStrings("data: [DONE]", seen.items[5]);
    for (seen.items[0..5]) |e| try testing.expect(std.mem.indexOf(u8, e, "\"id\":\"chatcmpl-x\"") != null);
}

test "llama-server's timings: in the completion object, and in a stream's last chunk only" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" } };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", test_cfg);
    defer a.deinit();
    const timings = a.json.value.object.get("timings").?.object;
    try testing.expectEqual(@as(i64, 2), timings.get("predicted_n").?.integer);
    try testing.expectEqual(@as(f64, 250), timings.get("predicted_per_second").?.float); // 2 tokens in 8 ms
    try testing.expect(timings.get("prompt_n").?.integer > 0 and timings.get("draft_n") == null);

    for ([_][]const u8{ "", ",\"stream_options\":{\"include_usage\":true}" }) |usage| {
        var buf: [160]u8 = undefined;
        const body = try std.fmt.bufPrint(&buf, "{{\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"stream\":true{s}}}", .{usage});
        var r = try runOk(&backend, body, test_cfg);
        defer r.deinit();
        var events = std.mem.splitSequence(u8, support.responseBody(r.out.items), "\n\n");
        var seen = std.ArrayList([]const u8).init(testing.allocator);
        defer seen.deinit();
        while (events.next()) |e| if (e.len > 0) try seen.append(e);
        // The last event before DONE: the finish chunk, or the usage chunk when asked for.
        const last = seen.items[seen.items.len - 2];
        try support.expectContains(last, if (usage.len > 0) "\"choices\":[],\"usage\"" else "\"finish_reason\":\"stop\"");
        try support.expectContains(last, "\"timings\":{\"prompt_n\":");
        for (seen.items[0 .. seen.items.len - 2]) |e| try testing.expect(!support.contains(e, "timings"));
    }
}

test "max_tokens ends the completion with length" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "c", "d" } };
    defer backend.deinit();
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}", test_cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"content\":\"ab\"") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"finish_reason\":\"length\"") != null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"n-predict\":2") != null);
}

test "the oldest turns are dropped until the prompt fits" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    const long = "x" ** 400; // 100 tokens in the fake
    const body = "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"" ++ long ++
        "1\"},{\"role\":\"assistant\",\"content\":\"" ++ long ++ "2\"},{\"role\":\"user\",\"content\":\"last\"}]}";
    var cfg = test_cfg;
    cfg.ctx_size = 200; // budget 160 tokens: only the system and last messages fit
    var r = try runOk(&backend, body, cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "system\nS") != null);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "last") != null);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "xxx") == null);
}

test "a long conversation drops the fewest turns with a few tokenizations" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var body = std.ArrayList(u8).init(testing.allocator);
    defer body.deinit();
    try body.appendSlice("{\"messages\":[{\"role\":\"system\",\"content\":\"S\"}");
    for (0..200) |i| try body.writer().print(",{{\"role\":\"{s}\",\"content\":\"turn {d:0>3} {s}\"}}", .{ if (i % 2 == 0) "user" else "assistant", i, "w" ** 30 });
    try body.appendSlice("]}");
    var cfg = test_cfg;
    cfg.ctx_size = 500; // budget 400 tokens = 1600 bytes in the fake: about 30 turns of 55 bytes
    var r = try runOk(&backend, body.items, cfg);
    defer r.deinit();
    const prompt = backend.prompt.items;
    try testing.expect(prompt.len / 4 <= 400);
    // the kept conversation starts with a user turn right after the system message
    try testing.expect(std.mem.startsWith(u8, prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nturn "));
    try testing.expect(std.mem.indexOf(u8, prompt, "turn 199") != null);
    // the fewest were dropped: one more (older) user/assistant pair, 67 + 72
    // bytes in this format, would not have fitted
    try testing.expect((prompt.len + 67 + 72) / 4 > 400);
    // bisection: about log2(200) attempts, not one per turn
    try testing.expect(backend.prompts_set < 15);
}

test "a last message larger than the context is context_length_exceeded" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.ctx_size = 50;
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"" ++ "y" ** 400 ++ "\"}]}", cfg);
    defer r.deinit();
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqual(@as(u16, 400), r.diag.err.status);
    try testing.expectEqualStrings("context_length_exceeded", r.diag.err.code.?);
    try testing.expectEqualStrings("messages", r.diag.err.param.?);
    try testing.expectEqual(@as(usize, 0), r.out.items.len);
}

test "the auto template asks the host and falls back to chatml" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = null;
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", cfg);
    defer r.deinit();
    try testing.expectEqualStrings("JINJA{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"add_generation_prompt\":true}", backend.prompt.items);

    backend.has_template = false;
    var r2 = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", cfg);
    defer r2.deinit();
    try testing.expectEqualStrings("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", backend.prompt.items);
}

test "a failure after the stream began is an error event, then DONE" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" }, .fail_at = 1 };
    defer backend.deinit();
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", test_cfg);
    defer r.deinit();
    try testing.expect(std.mem.endsWith(u8, r.out.items, "data: {\"error\":{\"message\":\"The model failed while generating; the server log has the details.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n"));
}

test "a client that left stops the generation at once" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" } };
    defer backend.deinit();
    var diag = Diagnostic{};
    var req = try request.parseChatRequest(testing.allocator, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", &diag);
    defer req.deinit();
    try testing.expectError(error.ClientGone, complete(testing.allocator, &backend, support.FailingWriter{}, &req, test_cfg, &diag));
    try testing.expectEqual(@as(usize, 0), backend.next_index);
}

const weather_tools =
    \\"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]
;

pub const call_tokens = [_][]const u8{ "Let me look.", "\n<tool", "_call>\n{\"na", "me\": \"get_weather\", ", "\"arguments\": {\"city\": ", "\"Par", "is\"}}\n</tool_call>" };

test "a call in the model's text becomes tool_calls, finish_reason tool_calls" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &call_tokens };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]," ++ weather_tools ++ "}", test_cfg);
    defer a.deinit();
    const choice = a.choice(0);
    try testing.expectEqualStrings("tool_calls", choice.get("finish_reason").?.string);
    const message = choice.get("message").?.object;
    try testing.expectEqualStrings("Let me look.", message.get("content").?.string);
    const call = message.get("tool_calls").?.array.items[0].object;
    try testing.expectEqualStrings("function", call.get("type").?.string);
    try testing.expect(std.mem.startsWith(u8, call.get("id").?.string, "call_"));
    const function = call.get("function").?.object;
    try testing.expectEqualStrings("get_weather", function.get("name").?.string);
    try testing.expectEqualStrings("{\"city\": \"Paris\"}", function.get("arguments").?.string);
    // the prompt lists the tools (chatml: Qwen's format); auto arms a lazy grammar
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "<tools>\n{\"type\": \"function\"") != null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"grammar-triggers\":[\"<tool_call>\"]") != null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"grammar-prefix\":\"<tool_call>\\n\"") != null);
}

test "a streamed call: id and name first, then argument fragments, then finish" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &call_tokens };
    defer backend.deinit();
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"stream\":true," ++ weather_tools ++ "}", test_cfg);
    defer r.deinit();
    const text = r.out.items;
    try testing.expect(std.mem.indexOf(u8, text, "\"delta\":{\"role\":\"assistant\",\"content\":null}") != null);
    const start = std.mem.indexOf(u8, text, "\"tool_calls\":[{\"index\":0,\"id\":\"call_").?;
    try testing.expect(std.mem.indexOf(u8, text[start..], "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}") != null);
    // several argument fragments, each with only the index
    try testing.expect(std.mem.count(u8, text, "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":") >= 2);
    try testing.expect(std.mem.indexOf(u8, text, "tool_call>") == null);
    try testing.expect(std.mem.indexOf(u8, text, "\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"") != null);
    try testing.expect(std.mem.endsWith(u8, text, "data: [DONE]\n\n"));
}

test "tool_choice required: an always-on grammar; none: no tools in the prompt, nothing read" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &call_tokens };
    defer backend.deinit();
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"tool_choice\":\"required\"," ++ weather_tools ++ "}", test_cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"json-schema\":") != null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "grammar-triggers") == null);

    var r2 = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],\"tool_choice\":\"none\"," ++ weather_tools ++ "}", test_cfg);
    defer r2.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "<tools>") == null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "json-schema") == null);
    try testing.expect(std.mem.indexOf(u8, r2.out.items, "\"tool_calls\"") == null);
    try testing.expect(std.mem.indexOf(u8, r2.out.items, "\"finish_reason\":\"stop\"") != null);
}

test "the model's own template receives the tools and the tool turns" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = null;
    var r = try runOk(&backend,
        \\{"messages":[{"role":"user","content":"w?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
        \\{"role":"tool","tool_call_id":"call_9","content":"sun"}],
    ++ weather_tools ++ "}", cfg);
    defer r.deinit();
    // the fake echoes the request: it lists the tools, so the template is used as is
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "\"tools\":[{\"type\":\"function\"") != null);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "\"tool_calls\":[{\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{}\"}}]") != null);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "{\"role\":\"tool\",\"content\":\"sun\",\"tool_call_id\":\"call_9\"}") != null);
}

test "a template without tools is taught a format in the system message" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "{\"tool_calls\": [{\"name\": \"get_weather\", ", "\"arguments\": {}}]}" } };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = .@"gemma-instruct";
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}]," ++ weather_tools ++ "}", cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "{\"tool_calls\": [{\"name\": <function-name>") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"finish_reason\":\"tool_calls\"") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"content\":null") != null);
}

test "n choices: one context each, indexed, their tokens counted once" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" } };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3,\"seed\":5}", test_cfg);
    defer a.deinit();
    try testing.expectEqual(@as(usize, 2), backend.forks);
    const choices = a.json.value.object.get("choices").?.array.items;
    try testing.expectEqual(@as(usize, 3), choices.len);
    for (choices, 0..) |c, i| {
        try testing.expectEqual(@as(i64, @intCast(i)), c.object.get("index").?.integer);
        try testing.expectEqualStrings("ab", c.object.get("message").?.object.get("content").?.string);
    }
    try testing.expectEqual(@as(i64, 6), a.json.value.object.get("usage").?.object.get("completion_tokens").?.integer);

    var s = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3,\"stream\":true}", test_cfg);
    defer s.deinit();
    for ([_][]const u8{ "0", "1", "2" }) |i| {
        var buf: [64]u8 = undefined;
        const finish = try std.fmt.bufPrint(&buf, "\"index\":{s},\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"", .{i});
        try testing.expectEqual(@as(usize, 1), std.mem.count(u8, s.out.items, finish));
        const content = try std.fmt.bufPrint(&buf, "\"index\":{s},\"delta\":{{\"content\":\"a\"}}", .{i});
        try testing.expectEqual(@as(usize, 1), std.mem.count(u8, s.out.items, content));
    }
}

test "logprobs: the host's entries in OpenAI's shape, in the response and in chunks" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" }, .logprobs = true };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true,\"top_logprobs\":1}", test_cfg);
    defer a.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"logprobs\":true,\"top-logprobs\":1") != null);
    const content = a.choice(0).get("logprobs").?.object.get("content").?.array.items;
    try testing.expectEqual(@as(usize, 2), content.len);
    try testing.expectEqualStrings("b", content[1].object.get("token").?.string);
    try testing.expect(content[1].object.get("id") == null);
    try testing.expectEqual(@as(i64, 98), content[1].object.get("bytes").?.array.items[0].integer);
    try testing.expectEqualStrings("x", content[1].object.get("top_logprobs").?.array.items[0].object.get("token").?.string);

    var s = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true,\"stream\":true}", test_cfg);
    defer s.deinit();
    try testing.expect(std.mem.indexOf(u8, s.out.items, "\"delta\":{\"content\":\"a\"},\"logprobs\":{\"content\":[{\"token\":\"a\",\"logprob\":-0.25,\"bytes\":[97],") != null);
}

test "thinking goes to reasoning_content, the answer to content, and both count as tokens" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "<th", "ink>\nLet", " me see", ".\n</thi", "nk>\n\nFo", "ur." } };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"}],\"stop\":\"see\"}", test_cfg);
    defer a.deinit();
    const message = a.choice(0).get("message").?.object;
    // the stop string "see" is in the thinking only: it does not end the answer
    try testing.expectEqualStrings("Let me see.", message.get("reasoning_content").?.string);
    try testing.expectEqualStrings("Four.", message.get("content").?.string);
    try testing.expectEqual(@as(i64, 6), a.json.value.object.get("usage").?.object.get("completion_tokens").?.integer);
}

test "a streamed think block comes in reasoning_content deltas; cut off, it is all reasoning" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "<think>", "a", "b", "c" } };
    defer backend.deinit();
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,\"max_tokens\":3}", test_cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"delta\":{\"reasoning_content\":\"a\"}") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"delta\":{\"reasoning_content\":\"b\"}") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"c\"") == null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"delta\":{\"content\"") == null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"finish_reason\":\"length\"") != null);
}

test "a prompt that ends in an opened think block starts the output in reasoning" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "hmm", "</think>", "ok" }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = null;
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"chat_template_kwargs\":{\"enable_thinking\":true},\"reasoning_effort\":\"low\"}", cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"content\":\"ok\",\"reasoning_content\":\"hmm\"") != null);
    // the template variables reached the host's template
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, ",\"chat_template_kwargs\":{\"enable_thinking\":true,\"reasoning_effort\":\"low\"},\"add_generation_prompt\":true}") != null);
}

test "earlier turns' reasoning_content goes to the model's template, not to a named one" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    const body = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":\"because\"},{\"role\":\"user\",\"content\":\"q2\"}]}";
    var cfg = test_cfg;
    cfg.template = null;
    var r = try runOk(&backend, body, cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":\"because\"}") != null);

    var r2 = try runOk(&backend, body, test_cfg);
    defer r2.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "because") == null);
}

test "with --reasoning-format none the think block stays in content" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "<think>", "hmm", "</think>", "ok" } };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.reasoning_format = .none;
    var r = try runOk(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", cfg);
    defer r.deinit();
    try testing.expect(std.mem.indexOf(u8, r.out.items, "\"content\":\"<think>hmm</think>ok\"}") != null);
    try testing.expect(std.mem.indexOf(u8, r.out.items, "reasoning_content") == null);
}

test "a think block before a call: the reasoning apart, the call read from the answer" {
    const tokens = [_][]const u8{ "<think>", "The user wants", " the weather.</th", "ink>\n" } ++ call_tokens;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &tokens };
    defer backend.deinit();
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]," ++ weather_tools ++ "}", test_cfg);
    defer a.deinit();
    const choice = a.choice(0);
    try testing.expectEqualStrings("tool_calls", choice.get("finish_reason").?.string);
    const message = choice.get("message").?.object;
    try testing.expectEqualStrings("The user wants the weather.", message.get("reasoning_content").?.string);
    try testing.expectEqualStrings("Let me look.", message.get("content").?.string);
    try testing.expectEqualStrings("get_weather", message.get("tool_calls").?.array.items[0].object.get("function").?.object.get("name").?.string);
}

test "Gemma 4: the thought channel apart, its call read from the answer, the markers asked for" {
    const tokens = [_][]const u8{ "<|channel>", "thought", "\nThe user wants", " the weather.", "<channel|>", "<|tool_call>", "call:get_weather{city:", "<|\"|>", "Paris", "<|\"|>", "}", "<tool_call|>" };
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &tokens, .prompt_suffix = "<|tool>declaration:get_weather{}<tool|><turn|>\n<|turn>model\n" };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = null;
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]," ++ weather_tools ++ "}", cfg);
    defer a.deinit();
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"preserved-tokens\":[\"<tool_call>\",\"</tool_call>\",\"[TOOL_CALLS]\",\"<|python_tag|>\",\"<|tool_call>\",\"<tool_call|>\",\"<|\\\"|>\",\"<think>\",\"</think>\",\"<|channel>\",\"<channel|>\"]") != null);
    const choice = a.choice(0);
    try testing.expectEqualStrings("tool_calls", choice.get("finish_reason").?.string);
    const message = choice.get("message").?.object;
    try testing.expectEqualStrings("The user wants the weather.", message.get("reasoning_content").?.string);
    try testing.expect(message.get("content").? == .null);
    const call = message.get("tool_calls").?.array.items[0].object.get("function").?.object;
    try testing.expectEqualStrings("get_weather", call.get("name").?.string);
    try testing.expectEqualStrings("{\"city\": \"Paris\"}", call.get("arguments").?.string);
}

test "output constrained from its first token is the answer even after an opened think block" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "{\"a\"", ": 1}" }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.template = null;
    var a = try runJson(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"json_object\"}}", cfg);
    defer a.deinit();
    const message = a.choice(0).get("message").?.object;
    try testing.expectEqualStrings("{\"a\": 1}", message.get("content").?.string);
    try testing.expect(message.get("reasoning_content") == null);
}

test "a logit_bias token the model lacks is a 400 naming logit_bias" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"a"} };
    defer backend.deinit();
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logit_bias\":{\"99999\":-100}}", test_cfg);
    defer r.deinit();
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqual(@as(u16, 400), r.diag.err.status);
    try testing.expectEqualStrings("logit_bias", r.diag.err.param.?);
}
