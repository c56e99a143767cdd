//! One chat completion, from a checked request to the bytes of the response:
//! render the prompt, fit it into the context (dropping the oldest turns),
//! generate, and write either one JSON object or a stream of SSE events.
//!
//! `backend` is anything with the methods of nn.Backend (renderTemplate,
//! setMetadata, setPrompt, info, next, finish), so the flow is tested here
//! against a scripted fake. `out` is anything with `writeAll`; each call is one
//! write on the wire, and a failed write means the client is gone.

const std = @import("std");
const openai = @import("openai.zig");
const templates = @import("templates.zig");
const stream = @import("stream.zig");

const log = std.log.scoped(.chat);

pub const Config = struct {
    model_id: []const u8,
    ctx_size: u32,
    /// null: the model's own template, rendered by the host.
    template: ?templates.Template,
    created: i64,
    /// `chatcmpl-...`, the same in every chunk.
    id: []const u8,
};

/// The prompt as it will be generated from.
const Prepared = struct {
    prompt_tokens: u32,
    /// The most tokens the completion may have.
    n_predict: u32,
    build: ?i64,
};

pub const ClientGone = error{ClientGone};

/// Runs a completion. error.InvalidRequest (with `diag` set) comes before
/// anything was written, so the caller answers with that error; errors after
/// the response began are written into the stream here. error.ClientGone:
/// the client left, stop at once.
pub fn complete(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    req: *const openai.ChatRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !void {
    const prepared = try prepare(allocator, backend, req, cfg, diag);
    var fingerprint_buf: [40]u8 = undefined;
    const env = openai.Envelope{
        .id = cfg.id,
        .created = cfg.created,
        .model = cfg.model_id,
        // A host that does not know its llama.cpp build says 0.
        .system_fingerprint = if (prepared.build) |b| if (b <= 0) "fp_llamaedge" else
            std.fmt.bufPrint(&fingerprint_buf, "fp_llamaedge_b{d}", .{b}) catch "fp_llamaedge"
        else
            "fp_llamaedge",
    };

    var stops = std.ArrayList([]const u8).init(allocator);
    defer stops.deinit();
    try stops.appendSlice(req.stop);
    if (cfg.template) |t| try stops.append(t.endOfTurn());

    if (req.stream) {
        try streamCompletion(allocator, backend, out, req, env, prepared, stops.items);
    } else {
        try wholeCompletion(allocator, backend, out, env, prepared, stops.items, diag);
    }
}

fn streamCompletion(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    req: *const openai.ChatRequest,
    env: openai.Envelope,
    prepared: Prepared,
    stops: []const []const u8,
) !void {
    try write(out, "Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n\n");
    var event = std.ArrayList(u8).init(allocator);
    defer event.deinit();
    try openai.appendChunk(&event, env, .role, null);
    try write(out, event.items);

    var gen = Generation.init(allocator, stops, prepared.n_predict);
    defer gen.deinit();
    while (true) {
        const text = gen.step(backend) catch |err| {
            backend.finish();
            event.clearRetainingCapacity();
            try event.appendSlice("data: ");
            try openai.appendError(&event, generationError(err, prepared));
            try event.appendSlice("\n\n");
            try write(out, event.items);
            try write(out, openai.done_event);
            return;
        };
        if (text.len > 0) {
            event.clearRetainingCapacity();
            try openai.appendChunk(&event, env, .{ .content = text }, null);
            try write(out, event.items);
        }
        if (gen.finish_reason != null) break;
    }
    const cached_tokens = backend.cachedTokens();
    backend.finish();
    event.clearRetainingCapacity();
    try openai.appendChunk(&event, env, .empty, gen.finish_reason.?);
    try write(out, event.items);
    if (req.include_usage) {
        event.clearRetainingCapacity();
        try openai.appendUsageChunk(&event, env, .{ .prompt_tokens = prepared.prompt_tokens, .completion_tokens = gen.tokens, .cached_tokens = cached_tokens });
        try write(out, event.items);
    }
    try write(out, openai.done_event);
}

fn wholeCompletion(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    env: openai.Envelope,
    prepared: Prepared,
    stops: []const []const u8,
    diag: *openai.Diagnostic,
) !void {
    var content = std.ArrayList(u8).init(allocator);
    defer content.deinit();
    var gen = Generation.init(allocator, stops, prepared.n_predict);
    defer gen.deinit();
    while (gen.finish_reason == null) {
        const text = gen.step(backend) catch |err| {
            backend.finish();
            const api_err = generationError(err, prepared);
            diag.err = api_err;
            return error.InvalidRequest;
        };
        try content.appendSlice(text);
    }
    const cached_tokens = backend.cachedTokens();
    backend.finish();
    var body = std.ArrayList(u8).init(allocator);
    defer body.deinit();
    try body.appendSlice("Status: 200 OK\nContent-Type: application/json\n\n");
    try openai.appendCompletion(&body, env, content.items, gen.finish_reason.?, .{ .prompt_tokens = prepared.prompt_tokens, .completion_tokens = gen.tokens, .cached_tokens = cached_tokens });
    try write(out, body.items);
}

fn write(out: anytype, bytes: []const u8) ClientGone!void {
    out.writeAll(bytes) catch return error.ClientGone;
}

/// What went wrong during generation, as the API reports it.
fn generationError(err: anyerror, prepared: Prepared) openai.ApiError {
    return switch (err) {
        error.PromptTooLong => .{
            .status = 400,
            .message = "The prompt does not fit in the model's context. Shorten the messages.",
            .param = "messages",
            .code = "context_length_exceeded",
        },
        error.OutOfMemory => .{ .status = 500, .message = "The app ran out of memory while generating.", .kind = "server_error" },
        else => blk: {
            _ = prepared;
            break :blk .{ .status = 500, .message = "The model failed while generating; the server log has the details.", .kind = "server_error" };
        },
    };
}

/// The token loop: counts tokens, enforces the limit, filters the text.
pub const Generation = struct {
    filter: stream.TextFilter,
    n_predict: u32,
    tokens: u32 = 0,
    finish_reason: ?openai.Finish = null,

    pub fn init(allocator: std.mem.Allocator, stops: []const []const u8, n_predict: u32) Generation {
        return .{ .filter = stream.TextFilter.init(allocator, stops), .n_predict = n_predict };
    }

    pub fn deinit(self: *Generation) void {
        self.filter.deinit();
    }

    /// Generates one token and returns the text it releases (maybe empty).
    /// Sets finish_reason when the completion is over.
    pub fn step(self: *Generation, backend: anytype) ![]const u8 {
        // The app enforces the limit itself: a host need not honour n-predict.
        if (self.tokens >= self.n_predict) return self.end(.length);
        switch (try backend.next()) {
            .end => |reason| return self.end(reason),
            .token => |bytes| {
                self.tokens += 1;
                const text = try self.filter.push(bytes);
                if (self.filter.stopped) self.finish_reason = .stop;
                return text;
            },
        }
    }

    fn end(self: *Generation, reason: openai.Finish) ![]const u8 {
        self.finish_reason = reason;
        return self.filter.finish();
    }
};

// ---------------------------------------------------------------------------
// Prompt and context budget

/// Renders the prompt and fits it into the context: the answer gets a reserve
/// (max_tokens, or a fifth of the context); when the prompt is over the rest,
/// the oldest non-system turns are dropped (as few as possible, found by
/// bisection so that a long conversation costs a few tokenizations, not one per
/// turn). Then the options are set with the final n-predict, and the prompt set
/// again after them (the documented order).
fn prepare(
    allocator: std.mem.Allocator,
    backend: anytype,
    req: *const openai.ChatRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !Prepared {
    const ctx = cfg.ctx_size;
    const reserve = req.max_tokens orelse ctx / 5;
    if (reserve >= ctx)
        return diag.set(400, "max_tokens", "context_length_exceeded", "max_tokens ({d}) leaves no room for the messages: the model's context is {d} tokens.", .{ reserve, ctx });
    const fit = Fit{ .allocator = allocator, .messages = req.messages, .template = cfg.template, .budget = ctx - reserve };

    var best = try fit.attempt(backend, 0, diag);
    // `best` changes below; the defer frees whichever prompt it holds at the end.
    defer allocator.free(best.prompt);
    if (!best.fits) {
        const droppable = fit.droppable();
        const smallest = if (droppable == 0) best else try fit.attempt(backend, droppable, diag);
        if (!smallest.fits) {
            if (droppable > 0) allocator.free(smallest.prompt);
            if (smallest.tokens > 0) return diag.set(400, "messages", "context_length_exceeded", "This model's maximum context length is {d} tokens. However, your messages resulted in {d} tokens, and {d} more are reserved for the completion. Shorten the messages or lower max_tokens.", .{ ctx, smallest.tokens, reserve });
            return diag.set(400, "messages", "context_length_exceeded", "This model's maximum context length is {d} tokens, and your messages do not fit in it. Shorten the messages.", .{ctx});
        }
        allocator.free(best.prompt);
        best = smallest;
        // fits(lo) is false, fits(hi) is true: find the fewest turns to drop.
        var lo: usize = 0;
        var hi = droppable;
        while (hi - lo > 1) {
            const mid = lo + (hi - lo) / 2;
            const try_mid = try fit.attempt(backend, mid, diag);
            if (try_mid.fits) {
                allocator.free(best.prompt);
                best = try_mid;
                hi = mid;
            } else {
                allocator.free(try_mid.prompt);
                lo = mid;
            }
        }
        log.info("dropped the {d} oldest message(s) to fit the context of {d} tokens", .{ best.dropped, ctx });
    }

    var n_predict = ctx - best.tokens;
    if (req.max_tokens) |max| n_predict = @min(n_predict, max);
    var metadata = std.ArrayList(u8).init(allocator);
    defer metadata.deinit();
    try openai.appendMetadata(&metadata, req, n_predict);
    backend.setMetadata(metadata.items) catch return backendError(diag, "set the generation options");
    backend.setPrompt(best.prompt) catch return backendError(diag, "set the prompt");

    const info = backend.info(allocator) catch return backendError(diag, "read the token count");
    defer allocator.free(info);
    return .{ .prompt_tokens = best.tokens, .n_predict = n_predict, .build = jsonInteger(allocator, info, "llama_build_number") };
}

/// Trying the conversation with its oldest turns dropped.
const Fit = struct {
    allocator: std.mem.Allocator,
    messages: []const templates.Message,
    template: ?templates.Template,
    budget: u32,

    const Attempt = struct {
        /// Owned by the caller.
        prompt: []u8,
        /// 0 when the host could not count them (prompt over the whole context).
        tokens: u32,
        fits: bool,
        dropped: usize,
    };

    /// How many messages can go: all but system messages and the last one.
    fn droppable(self: Fit) usize {
        var n: usize = 0;
        for (self.messages[0 .. self.messages.len - 1]) |m| n += @intFromBool(m.role != .system);
        return n;
    }

    /// Renders and sets the prompt without the `drop` oldest droppable
    /// messages (and without assistant turns that would then come first, so
    /// the conversation starts with the user), and counts its tokens.
    fn attempt(self: Fit, backend: anytype, drop: usize, diag: *openai.Diagnostic) !Attempt {
        var selected = std.ArrayList(templates.Message).init(self.allocator);
        defer selected.deinit();
        var seen: usize = 0;
        var dropped: usize = 0;
        var at_front = true;
        for (self.messages, 0..) |m, i| {
            const is_last = i == self.messages.len - 1;
            if (m.role != .system and !is_last) {
                seen += 1;
                if (seen <= drop or (at_front and drop > 0 and m.role == .assistant)) {
                    dropped += 1;
                    continue;
                }
            }
            if (m.role != .system) at_front = false;
            try selected.append(m);
        }

        const prompt = try renderPrompt(self.allocator, backend, self.template, selected.items, diag);
        errdefer self.allocator.free(prompt);
        var fits = true;
        var tokens: u32 = 0;
        backend.setPrompt(prompt) catch |err| switch (err) {
            error.PromptTooLong => fits = false,
            else => return backendError(diag, "set the prompt"),
        };
        if (fits) {
            tokens = try inputTokens(self.allocator, backend, diag);
            fits = tokens <= self.budget;
        } else {
            // Over the whole context: the host may still say by how much (for the message).
            tokens = inputTokens(self.allocator, backend, diag) catch 0;
            if (tokens <= self.budget) tokens = 0; // a count from an earlier prompt
        }
        return .{ .prompt = prompt, .tokens = tokens, .fits = fits, .dropped = dropped };
    }
};

fn renderPrompt(
    allocator: std.mem.Allocator,
    backend: anytype,
    template: ?templates.Template,
    messages: []const templates.Message,
    diag: *openai.Diagnostic,
) ![]u8 {
    if (template) |t| return templates.render(allocator, t, messages);

    var request = std.ArrayList(u8).init(allocator);
    defer request.deinit();
    try appendTemplateRequest(&request, messages);
    return backend.renderTemplate(allocator, request.items) catch |err| switch (err) {
        error.NoTemplate => {
            log.info("the model has no chat template of its own: using chatml", .{});
            return templates.render(allocator, .chatml, messages);
        },
        error.TemplateFailed => diag.set(400, "messages", null, "The model's chat template rejected these messages (for example, some templates require user and assistant turns to alternate). The server log has the template's message.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, "render the chat template"),
    };
}

/// `{"messages":[{"role":..,"content":..}],"add_generation_prompt":true}`
pub fn appendTemplateRequest(out: *std.ArrayList(u8), messages: []const templates.Message) !void {
    const w = out.writer();
    try w.writeAll("{\"messages\":[");
    for (messages, 0..) |m, i| {
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"role\":\"{s}\",\"content\":", .{m.role.name()});
        try std.json.encodeJsonString(m.content, .{}, w);
        try w.writeByte('}');
    }
    try w.writeAll("],\"add_generation_prompt\":true}");
}

fn inputTokens(allocator: std.mem.Allocator, backend: anytype, diag: *openai.Diagnostic) !u32 {
    const info = backend.info(allocator) catch return backendError(diag, "read the token count");
    defer allocator.free(info);
    const n = jsonInteger(allocator, info, "input_tokens") orelse {
        log.err("get_output(1) gave no input_tokens: {s}", .{info});
        return backendError(diag, "read the token count");
    };
    return @intCast(std.math.clamp(n, 0, std.math.maxInt(u32)));
}

fn jsonInteger(allocator: std.mem.Allocator, json: []const u8, key: []const u8) ?i64 {
    const parsed = std.json.parseFromSlice(std.json.Value, allocator, json, .{}) catch return null;
    defer parsed.deinit();
    if (parsed.value != .object) return null;
    const v = parsed.value.object.get(key) orelse return null;
    return if (v == .integer) v.integer else null;
}

fn backendError(diag: *openai.Diagnostic, what: []const u8) error{InvalidRequest} {
    return diag.set(500, null, null, "The model backend could not {s}; the server log has the details.", .{what});
}

// ---------------------------------------------------------------------------

const testing = std.testing;

/// A scripted backend: one token per byte group, a token count of one per
/// four prompt bytes, and a record of what it was given.
const FakeBackend = struct {
    allocator: std.mem.Allocator,
    tokens: []const []const u8,
    end: openai.Finish = .stop,
    fail_at: ?usize = null,
    has_template: bool = true,
    next_index: usize = 0,
    prompt: std.ArrayListUnmanaged(u8) = .empty,
    metadata: std.ArrayListUnmanaged(u8) = .empty,
    prompts_set: usize = 0,
    finished: bool = false,

    fn deinit(self: *FakeBackend) void {
        self.prompt.deinit(self.allocator);
        self.metadata.deinit(self.allocator);
    }

    const Error = @import("nn.zig").Error || std.mem.Allocator.Error;

    pub fn renderTemplate(self: *FakeBackend, allocator: std.mem.Allocator, request_json: []const u8) Error![]u8 {
        if (!self.has_template) return error.NoTemplate;
        return std.fmt.allocPrint(allocator, "JINJA{s}", .{request_json});
    }

    pub fn setMetadata(self: *FakeBackend, json: []const u8) Error!void {
        self.metadata.clearRetainingCapacity();
        try self.metadata.appendSlice(self.allocator, json);
    }

    pub fn setPrompt(self: *FakeBackend, prompt: []const u8) Error!void {
        self.prompts_set += 1;
        self.prompt.clearRetainingCapacity();
        try self.prompt.appendSlice(self.allocator, prompt);
    }

    pub fn info(self: *FakeBackend, allocator: std.mem.Allocator) Error![]u8 {
        return std.fmt.allocPrint(allocator, "{{\"input_tokens\":{d},\"llama_build_number\":7}}", .{self.prompt.items.len / 4});
    }

    pub fn cachedTokens(self: *FakeBackend) u32 {
        _ = self;
        return 0;
    }

    pub fn next(self: *FakeBackend) Error!@import("nn.zig").Step {
        if (self.fail_at) |at| if (self.next_index == at) return error.BackendFailed;
        if (self.next_index >= self.tokens.len) return .{ .end = self.end };
        defer self.next_index += 1;
        return .{ .token = self.tokens[self.next_index] };
    }

    pub fn finish(self: *FakeBackend) void {
        self.finished = true;
    }
};

const Run = struct {
    out: std.ArrayList(u8),
    diag: openai.Diagnostic = .{},
    result: anyerror!void = {},

    fn deinit(self: *Run) void {
        self.out.deinit();
    }
};

fn run(backend: *FakeBackend, body: []const u8, cfg: Config) !Run {
    var r = Run{ .out = std.ArrayList(u8).init(testing.allocator) };
    errdefer r.deinit();
    var parse_diag = openai.Diagnostic{};
    var req = try openai.parseChatRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    r.result = complete(testing.allocator, backend, r.out.writer(), &req, cfg, &r.diag);
    return r;
}

const test_cfg = Config{ .model_id = "tiny", .ctx_size = 1000, .template = .chatml, .created = 1, .id = "chatcmpl-x" };

test "a non-streaming completion joins the tokens and counts them" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "Hel", "lo \xC3", "\xA9!" } };
    defer backend.deinit();
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", test_cfg);
    defer r.deinit();
    try r.result;
    const body = r.out.items[std.mem.indexOf(u8, r.out.items, "\n\n").? + 2 ..];
    const parsed = try std.json.parseFromSlice(std.json.Value, testing.allocator, body, .{});
    defer parsed.deinit();
    const choice = parsed.value.object.get("choices").?.array.items[0].object;
    try testing.expectEqualStrings("Hello é!", choice.get("message").?.object.get("content").?.string);
    try testing.expectEqualStrings("stop", choice.get("finish_reason").?.string);
    try testing.expectEqual(@as(i64, 3), parsed.value.object.get("usage").?.object.get("completion_tokens").?.integer);
    try testing.expectEqualStrings("fp_llamaedge_b7", parsed.value.object.get("system_fingerprint").?.string);
    try testing.expect(backend.finished);
    // the prompt was set again after the options, which carry the limit
    try testing.expectEqual(@as(usize, 2), backend.prompts_set);
    try testing.expect(std.mem.startsWith(u8, backend.metadata.items, "{\"n-predict\":"));
}

test "a stream has a role chunk, content chunks, a finish chunk, usage, and DONE" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "STO", "P", "c" } };
    defer backend.deinit();
    var r = try run(&backend,
        \\{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"stop":"STOP"}
    , test_cfg);
    defer r.deinit();
    try r.result;
    const text = r.out.items;
    try testing.expect(std.mem.startsWith(u8, text, "Status: 200 OK\nContent-Type: text/event-stream\n"));
    var events = std.mem.splitSequence(u8, text[std.mem.indexOf(u8, text, "\n\n").? + 2 ..], "\n\n");
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

test "max_tokens ends the completion with length" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "c", "d" } };
    defer backend.deinit();
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}", test_cfg);
    defer r.deinit();
    try r.result;
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
    var r = try run(&backend, body, cfg);
    defer r.deinit();
    try r.result;
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
    var r = try run(&backend, body.items, cfg);
    defer r.deinit();
    try r.result;
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
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", cfg);
    defer r.deinit();
    try r.result;
    try testing.expectEqualStrings("JINJA{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"add_generation_prompt\":true}", backend.prompt.items);

    backend.has_template = false;
    var r2 = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", cfg);
    defer r2.deinit();
    try r2.result;
    try testing.expectEqualStrings("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", backend.prompt.items);
}

test "a failure after the stream began is an error event, then DONE" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" }, .fail_at = 1 };
    defer backend.deinit();
    var r = try run(&backend, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", test_cfg);
    defer r.deinit();
    try r.result;
    try testing.expect(std.mem.endsWith(u8, r.out.items, "data: {\"error\":{\"message\":\"The model failed while generating; the server log has the details.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\ndata: [DONE]\n\n"));
}

const FailingWriter = struct {
    pub fn writeAll(_: FailingWriter, _: []const u8) !void {
        return error.BrokenPipe;
    }
};

test "a client that left stops the generation at once" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" } };
    defer backend.deinit();
    var diag = openai.Diagnostic{};
    var req = try openai.parseChatRequest(testing.allocator, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", &diag);
    defer req.deinit();
    try testing.expectError(error.ClientGone, complete(testing.allocator, &backend, FailingWriter{}, &req, test_cfg, &diag));
    try testing.expectEqual(@as(usize, 0), backend.next_index);
}
