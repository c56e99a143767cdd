//! One chat completion, from a checked request to an output: the prompt
//! made and fitted (prompt.zig), one or more choices generated in turn (the
//! token loop of generation.zig), function calls read out of the text, and
//! the result handed to an output, the seam where an API's shape plugs in:
//! output.zig's OpenAIOutput (one JSON object or a stream of chunks), or
//! anthropic/output.zig's for the Messages API.
//!
//! `backend` is anything with the methods of nn.Backend (renderTemplate,
//! setMetadata, setPrompt, info, next, finish, fork, tokenLogprobs), so the
//! flow is tested (chat/tests.zig) against a scripted fake.

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const metadata = @import("metadata.zig");
const prompt = @import("prompt.zig");
const generation = @import("../generation.zig");
const call_stream = @import("../tools/stream.zig");

const Diagnostic = shared.api_error.Diagnostic;
const ApiError = shared.api_error.ApiError;
const ChatRequest = request.ChatRequest;
const Finish = generation.Finish;
pub const Config = prompt.Config;

/// A write failed: the client left, so the generation stops at once.
pub const ClientGone = error{ClientGone};

/// What a completion is about, for an output to write its first bytes.
pub const Info = struct {
    prompt_tokens: u32,
    /// The host's llama.cpp build number, when it says.
    build: ?i64,
    /// The answer may be function calls.
    tools: bool,
    n: u8,
};

/// What the host did with the prompt and the answer, in tokens.
pub const Usage = struct {
    prompt_tokens: u32,
    completion_tokens: u32,
    /// Prompt tokens the host reused from its KV cache (an earlier turn of the conversation).
    cached_tokens: u32 = 0,
    /// Completion tokens that released thinking text (the Responses API reports them).
    reasoning_tokens: u32 = 0,
    /// llama-server's `timings` (the OpenAI shape writes them); of the first
    /// choice when there are several.
    timings: ?shared.nn.Timings = null,
};

/// One choice of a whole completion.
pub const Choice = struct {
    content: ?[]const u8,
    tool_calls: []const shared.templates.ToolCall = &.{},
    finish: Finish,
    /// The host's logprob entries (a JSON array), when asked for.
    logprobs: ?[]const u8 = null,
    /// The stop string that ended the text, if one did.
    stop_sequence: ?[]const u8 = null,
    /// The thinking apart from the answer (written only when not empty).
    reasoning: []const u8 = "",
};

/// The completion itself, written through `output`, the seam between the
/// chat path and an API's shape. Streaming, `output` receives `start`, then
/// per choice `reasoning` (when the output has it), `text`, `callStart`,
/// `callArguments` and `choiceEnd`, then
/// `end` (or `fail` when generation breaks down); a whole response is one
/// `whole`. Each takes the choice index and, where given, the logprob
/// entries of the tokens behind it.
pub fn generate(
    allocator: std.mem.Allocator,
    backend: anytype,
    output: anytype,
    req: *const ChatRequest,
    cfg: Config,
    diag: *Diagnostic,
) !void {
    var arena_state = std.heap.ArenaAllocator.init(allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();

    const prepared = try prompt.prepare(allocator, arena, backend, req, cfg, diag);
    defer allocator.free(prepared.prompt);

    var stops = std.ArrayList([]const u8).init(allocator);
    defer stops.deinit();
    try stops.appendSlice(req.stop);
    if (cfg.template) |t| try stops.append(t.endOfTurn());

    // One execution context per choice: the first is `backend`, the others
    // are opened on the same graph with the same prompt (seed + i).
    const Backend = @TypeOf(backend.*);
    var extra: [request.max_choices - 1]Backend = undefined;
    const C = Generating(Backend);
    const choices = try arena.alloc(C, req.n);
    var ready: usize = 0;
    // Each choice's context is finished once (end is idempotent), then freed.
    defer for (choices[0..ready]) |*c| {
        c.end();
        c.deinit();
    };
    choices[0] = C.init(allocator, backend, stops.items, prepared, req, 0);
    ready = 1;
    for (1..req.n) |i| {
        extra[i - 1] = backend.fork() catch return prompt.backendError(diag, "open a context for another choice");
        choices[i] = C.init(allocator, &extra[i - 1], stops.items, prepared, req, @intCast(i));
        ready += 1;
        var options = std.ArrayList(u8).init(allocator);
        defer options.deinit();
        try metadata.appendMetadata(&options, req, .{ .n_predict = prepared.n_predict, .constraint = prepared.constraint, .choice = @intCast(i), .preserved = &prompt.preserved_markers });
        extra[i - 1].setMetadata(options.items) catch |err| return prompt.metadataError(err, req, prepared.constraint != null, diag);
        extra[i - 1].setPrompt(prepared.prompt) catch return prompt.backendError(diag, "set the prompt");
    }

    const info = Info{ .prompt_tokens = prepared.prompt_tokens, .build = prepared.build, .tools = prepared.format != null, .n = req.n };
    if (req.stream) {
        try streamChoices(arena, output, info, choices);
    } else {
        try wholeChoices(arena, output, info, choices, diag);
    }
}

/// One choice being generated: its context, token loop and call reader.
fn Generating(comptime Backend: type) type {
    return struct {
        const Self = @This();
        backend: *Backend,
        index: u32,
        gen: generation.Generation,
        calls: ?call_stream.Stream,
        want_logprobs: bool,
        /// Logprob entries not yet sent (a JSON array's items, comma-joined).
        logprobs: std.ArrayListUnmanaged(u8) = .empty,
        /// All of them (the whole response).
        all_logprobs: std.ArrayListUnmanaged(u8) = .empty,
        allocator: std.mem.Allocator,
        content: std.ArrayListUnmanaged(u8) = .empty,
        thought: std.ArrayListUnmanaged(u8) = .empty,
        done: bool = false,
        finished: bool = false,
        reasoning_tokens: u32 = 0,

        fn init(allocator: std.mem.Allocator, backend: *Backend, stops: []const []const u8, prepared: prompt.Prepared, req: *const ChatRequest, index: u32) Self {
            var gen = generation.Generation.init(allocator, stops, prepared.n_predict);
            gen.splitThinking(prepared.thinking);
            return .{
                .backend = backend,
                .index = index,
                .gen = gen,
                .calls = if (prepared.format) |f| blk: {
                    var calls = call_stream.Stream.init(allocator, f, !req.parallel_tool_calls);
                    calls.bare = req.tool_choice == .required or req.tool_choice == .function;
                    calls.tools = req.tools;
                    break :blk calls;
                } else null,
                .want_logprobs = req.logprobs,
                .allocator = allocator,
            };
        }

        fn deinit(self: *Self) void {
            self.gen.deinit();
            if (self.calls) |*c| c.deinit();
            self.logprobs.deinit(self.allocator);
            self.all_logprobs.deinit(self.allocator);
            self.content.deinit(self.allocator);
            self.thought.deinit(self.allocator);
        }

        /// Generates one token: returns the text it releases.
        fn step(self: *Self) ![]const u8 {
            const text = try self.gen.step(self.backend);
            if (self.want_logprobs and self.gen.last_was_token) {
                const entry = self.backend.tokenLogprobs(self.allocator) catch |err| switch (err) {
                    error.OutOfMemory => return error.OutOfMemory,
                    else => null,
                };
                if (entry) |e| {
                    defer self.allocator.free(e);
                    for ([_]*std.ArrayListUnmanaged(u8){ &self.logprobs, &self.all_logprobs }) |list| {
                        if (list.items.len > 0) try list.append(self.allocator, ',');
                        try list.appendSlice(self.allocator, e);
                    }
                }
            }
            if (self.gen.reasoning_text.len > 0) self.reasoning_tokens += 1;
            if (self.gen.finish_reason != null) self.done = true;
            return text;
        }

        /// The logprobs gathered since the last call, as a JSON array, or null.
        fn takeLogprobs(self: *Self, arena: std.mem.Allocator) !?[]const u8 {
            if (!self.want_logprobs) return null;
            const json = try std.fmt.allocPrint(arena, "[{s}]", .{self.logprobs.items});
            self.logprobs.clearRetainingCapacity();
            return json;
        }

        fn end(self: *Self) void {
            if (self.finished) return;
            self.finished = true;
            self.backend.finish();
        }
    };
}

/// A choice's deltas, forwarded to the output with the choice's index and
/// the logprobs gathered since the last delta.
fn ChoiceSink(comptime O: type, comptime C: type) type {
    return struct {
        const Self = @This();
        output: O,
        arena: std.mem.Allocator,
        choice: *C,

        pub fn text(self: *Self, bytes: []const u8) !void {
            try self.output.text(self.choice.index, bytes, try self.choice.takeLogprobs(self.arena));
        }

        /// An output without `reasoning` leaves the thinking out.
        fn reasoning(self: *Self, bytes: []const u8) !void {
            if (comptime @hasDecl(@typeInfo(O).pointer.child, "reasoning"))
                try self.output.reasoning(self.choice.index, bytes, try self.choice.takeLogprobs(self.arena));
        }

        pub fn callStart(self: *Self, index: u32, id: []const u8, name: []const u8) !void {
            try self.output.callStart(self.choice.index, index, id, name, try self.choice.takeLogprobs(self.arena));
        }

        pub fn callArguments(self: *Self, index: u32, fragment: []const u8) !void {
            try self.output.callArguments(self.choice.index, index, fragment, try self.choice.takeLogprobs(self.arena));
        }
    };
}

const NullSink = struct {
    pub fn text(_: NullSink, _: []const u8) !void {}
    pub fn callStart(_: NullSink, _: u32, _: []const u8, _: []const u8) !void {}
    pub fn callArguments(_: NullSink, _: u32, _: []const u8) !void {}
};

fn streamChoices(arena: std.mem.Allocator, output: anytype, info: Info, choices: anytype) !void {
    try output.start(info);
    const Sink = ChoiceSink(@TypeOf(output), @TypeOf(choices[0]));
    var remaining = choices.len;
    // Choices take turns, a token each, so that the host can batch them.
    while (remaining > 0) {
        for (choices) |*c| {
            if (c.done) continue;
            var sink = Sink{ .output = output, .arena = arena, .choice = c };
            const text = c.step() catch |err| {
                for (choices) |*other| other.end();
                return output.fail(generationError(err));
            };
            if (c.gen.reasoning_text.len > 0) try sink.reasoning(c.gen.reasoning_text);
            if (c.calls) |*calls| {
                try calls.push(text, &sink);
            } else if (text.len > 0) try sink.text(text);
            if (!c.done) continue;
            remaining -= 1;
            var finish = c.gen.finish_reason.?;
            if (c.calls) |*calls| {
                const result = try calls.finish(arena, &sink);
                if (result.calls.len > 0) finish = .tool_calls;
            }
            // The stream's last chunk carries the timings (OpenAI's shape): read them now.
            if (remaining == 0) if (comptime @hasDecl(@typeInfo(@TypeOf(output)).pointer.child, "lastTimings"))
                output.lastTimings(choices[0].backend.timings());
            try output.choiceEnd(c.index, finish, c.gen.filter.matched, try c.takeLogprobs(arena));
        }
    }
    const cached_tokens = choices[0].backend.cachedTokens();
    const timings = choices[0].backend.timings();
    for (choices) |*c| c.end();
    try output.end(.{ .prompt_tokens = info.prompt_tokens, .completion_tokens = completionTokens(choices), .cached_tokens = cached_tokens, .reasoning_tokens = reasoningTokens(choices), .timings = timings });
}

fn completionTokens(choices: anytype) u32 {
    var n: u32 = 0;
    for (choices) |*c| n += c.gen.tokens;
    return n;
}

fn reasoningTokens(choices: anytype) u32 {
    var n: u32 = 0;
    for (choices) |*c| n += c.reasoning_tokens;
    return n;
}

fn wholeChoices(arena: std.mem.Allocator, output: anytype, info: Info, choices: anytype, diag: *Diagnostic) !void {
    var remaining = choices.len;
    while (remaining > 0) {
        for (choices) |*c| {
            if (c.done) continue;
            const text = c.step() catch |err| {
                for (choices) |*other| other.end();
                diag.err = generationError(err);
                return error.InvalidRequest;
            };
            try c.content.appendSlice(c.allocator, text);
            try c.thought.appendSlice(c.allocator, c.gen.reasoning_text);
            if (c.done) remaining -= 1;
        }
    }
    const cached_tokens = choices[0].backend.cachedTokens();
    const timings = choices[0].backend.timings();
    for (choices) |*c| c.end();

    const results = try arena.alloc(Choice, choices.len);
    for (choices, results) |*c, *r| {
        r.* = .{ .content = c.content.items, .finish = c.gen.finish_reason.?, .stop_sequence = c.gen.filter.matched, .reasoning = c.thought.items };
        if (c.calls) |*calls| {
            try calls.append(c.content.items);
            const result = try calls.finish(arena, NullSink{});
            r.content = result.content;
            r.tool_calls = result.calls;
            if (result.calls.len > 0) r.finish = .tool_calls;
        }
        if (c.want_logprobs) r.logprobs = try std.fmt.allocPrint(arena, "[{s}]", .{c.all_logprobs.items});
    }
    try output.whole(info, results, .{ .prompt_tokens = info.prompt_tokens, .completion_tokens = completionTokens(choices), .cached_tokens = cached_tokens, .reasoning_tokens = reasoningTokens(choices), .timings = timings });
}

/// What went wrong during generation, as the API reports it.
fn generationError(err: anyerror) ApiError {
    return switch (err) {
        error.PromptTooLong => .{
            .status = 400,
            .message = "The prompt does not fit in the model's context. Shorten the messages.",
            .param = "messages",
            .code = "context_length_exceeded",
        },
        error.OutOfMemory => .{ .status = 500, .message = "The app ran out of memory while generating.", .kind = "server_error" },
        else => .{ .status = 500, .message = "The model failed while generating; the server log has the details.", .kind = "server_error" },
    };
}
