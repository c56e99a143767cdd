//! One chat completion, from a checked request to the bytes of the response:
//! render the prompt, fit it into the context (dropping the oldest turns),
//! generate one or more choices, read function calls out of the text, and
//! hand the result to an output: OpenAIOutput here (one JSON object or a
//! stream of chunks), anthropic.Output for the Messages API.
//!
//! `backend` is anything with the methods of nn.Backend (renderTemplate,
//! setMetadata, setPrompt, info, next, finish, fork, tokenLogprobs), so the
//! flow is tested here against a scripted fake. `out` is anything with
//! `writeAll`; each call is one write on the wire, and a failed write means
//! the client is gone.

const std = @import("std");
const openai = @import("openai.zig");
const templates = @import("templates.zig");
const stream = @import("stream.zig");
const tools = @import("tools.zig");
const reasoning = @import("reasoning.zig");

const log = std.log.scoped(.chat);

pub const Config = struct {
    model_id: []const u8,
    ctx_size: u32,
    /// null: the model's own template, rendered by the host.
    template: ?templates.Template,
    created: i64,
    /// `chatcmpl-...`, the same in every chunk.
    id: []const u8,
    reasoning_format: reasoning.Format = .auto,
};

/// How the prompt is rendered.
const Render = struct {
    template: ?templates.Template,
    /// The functions the prompt lists (none for tool_choice "none").
    tools: []const templates.Tool = &.{},
    /// The template knows no tools: teach this format in the system message.
    teach: ?tools.Format = null,
};

/// The prompt as it will be generated from.
const Prepared = struct {
    prompt_tokens: u32,
    /// The most tokens the completion may have.
    n_predict: u32,
    build: ?i64,
    /// The format calls are read in; null: the answer is text only.
    format: ?tools.Format,
    /// The prompt, for the contexts of choices after the first. Owned.
    prompt: []u8,
    /// The call grammar every choice's metadata carries (in the request's arena).
    constraint: ?openai.Constraint,
    /// Split the thinking from the answer: its tags, and whether the prompt
    /// opened the block. Null: the text stays as it is (`--reasoning-format none`).
    thinking: ?reasoning.Start,
};

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

/// Runs a chat completion and writes it in OpenAI's shape (one JSON object,
/// or chat.completion.chunk events). error.InvalidRequest (with `diag` set)
/// comes before anything was written, so the caller answers with that error;
/// errors after the response began are written into the stream here.
/// error.ClientGone: the client left, stop at once.
pub fn complete(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    req: *const openai.ChatRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !void {
    var output = OpenAIOutput(@TypeOf(out)).init(allocator, out, cfg, req.include_usage);
    defer output.deinit();
    return generate(allocator, backend, &output, req, cfg, diag);
}

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
    req: *const openai.ChatRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !void {
    var arena_state = std.heap.ArenaAllocator.init(allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();

    const prepared = try prepare(allocator, arena, backend, req, cfg, diag);
    defer allocator.free(prepared.prompt);

    var stops = std.ArrayList([]const u8).init(allocator);
    defer stops.deinit();
    try stops.appendSlice(req.stop);
    if (cfg.template) |t| try stops.append(t.endOfTurn());

    // One execution context per choice: the first is `backend`, the others
    // are opened on the same graph with the same prompt (seed + i).
    const Backend = @TypeOf(backend.*);
    var extra: [openai.max_choices - 1]Backend = undefined;
    const C = Choice(Backend);
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
        extra[i - 1] = backend.fork() catch return backendError(diag, "open a context for another choice");
        choices[i] = C.init(allocator, &extra[i - 1], stops.items, prepared, req, @intCast(i));
        ready += 1;
        var metadata = std.ArrayList(u8).init(allocator);
        defer metadata.deinit();
        try openai.appendMetadata(&metadata, req, .{ .n_predict = prepared.n_predict, .constraint = prepared.constraint, .choice = @intCast(i), .preserved = &preserved_markers });
        extra[i - 1].setMetadata(metadata.items) catch |err| return metadataError(err, req, prepared.constraint != null, diag);
        extra[i - 1].setPrompt(prepared.prompt) catch return backendError(diag, "set the prompt");
    }

    const info = Info{ .prompt_tokens = prepared.prompt_tokens, .build = prepared.build, .tools = prepared.format != null, .n = req.n };
    if (req.stream) {
        try streamChoices(arena, output, info, choices);
    } else {
        try wholeChoices(arena, output, info, choices, diag);
    }
}

/// One choice being generated: its context, token loop and call reader.
fn Choice(comptime Backend: type) type {
    return struct {
        const Self = @This();
        backend: *Backend,
        index: u32,
        gen: Generation,
        calls: ?tools.Stream,
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

        fn init(allocator: std.mem.Allocator, backend: *Backend, stops: []const []const u8, prepared: Prepared, req: *const openai.ChatRequest, index: u32) Self {
            var gen = Generation.init(allocator, stops, prepared.n_predict);
            gen.splitThinking(prepared.thinking);
            return .{
                .backend = backend,
                .index = index,
                .gen = gen,
                .calls = if (prepared.format) |f| blk: {
                    var calls = tools.Stream.init(allocator, f, !req.parallel_tool_calls);
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
            try output.choiceEnd(c.index, finish, c.gen.filter.matched, try c.takeLogprobs(arena));
        }
    }
    const cached_tokens = choices[0].backend.cachedTokens();
    for (choices) |*c| c.end();
    try output.end(.{ .prompt_tokens = info.prompt_tokens, .completion_tokens = completionTokens(choices), .cached_tokens = cached_tokens });
}

fn completionTokens(choices: anytype) u32 {
    var n: u32 = 0;
    for (choices) |*c| n += c.gen.tokens;
    return n;
}

fn wholeChoices(arena: std.mem.Allocator, output: anytype, info: Info, choices: anytype, diag: *openai.Diagnostic) !void {
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
    for (choices) |*c| c.end();

    const results = try arena.alloc(openai.Choice, choices.len);
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
    try output.whole(info, results, .{ .prompt_tokens = info.prompt_tokens, .completion_tokens = completionTokens(choices), .cached_tokens = cached_tokens });
}

/// OpenAI's chat completion shapes.
pub fn OpenAIOutput(comptime Out: type) type {
    return struct {
        const Self = @This();
        out: Out,
        cfg: Config,
        include_usage: bool,
        event: std.ArrayList(u8),
        fingerprint_buf: [40]u8 = undefined,
        env: openai.Envelope = undefined,

        pub fn init(allocator: std.mem.Allocator, out: Out, cfg: Config, include_usage: bool) Self {
            return .{ .out = out, .cfg = cfg, .include_usage = include_usage, .event = std.ArrayList(u8).init(allocator) };
        }

        pub fn deinit(self: *Self) void {
            self.event.deinit();
        }

        fn setEnvelope(self: *Self, build: ?i64) void {
            self.env = .{
                .id = self.cfg.id,
                .created = self.cfg.created,
                .model = self.cfg.model_id,
                // A host that does not know its llama.cpp build says 0.
                .system_fingerprint = if (build) |b| if (b <= 0) "fp_llamaedge" else
                    std.fmt.bufPrint(&self.fingerprint_buf, "fp_llamaedge_b{d}", .{b}) catch "fp_llamaedge"
                else
                    "fp_llamaedge",
            };
        }

        fn chunk(self: *Self, choice: u32, delta: openai.Delta, logprobs: ?[]const u8, finish: ?openai.Finish) !void {
            self.event.clearRetainingCapacity();
            try openai.appendChoiceChunk(&self.event, self.env, choice, delta, logprobs, finish);
            try write(self.out, self.event.items);
        }

        pub fn start(self: *Self, info: Info) !void {
            self.setEnvelope(info.build);
            try write(self.out, "Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n\n");
            for (0..info.n) |i| try self.chunk(@intCast(i), if (info.tools) .role_null else .role, null, null);
        }

        pub fn text(self: *Self, choice: u32, bytes: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .content = bytes }, logprobs, null);
        }

        pub fn reasoning(self: *Self, choice: u32, bytes: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .reasoning = bytes }, logprobs, null);
        }

        pub fn callStart(self: *Self, choice: u32, index: u32, id: []const u8, name: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .call_start = .{ .index = index, .id = id, .name = name } }, logprobs, null);
        }

        pub fn callArguments(self: *Self, choice: u32, index: u32, fragment: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .call_arguments = .{ .index = index, .fragment = fragment } }, logprobs, null);
        }

        pub fn choiceEnd(self: *Self, choice: u32, finish: openai.Finish, stop_sequence: ?[]const u8, logprobs: ?[]const u8) !void {
            _ = stop_sequence;
            try self.chunk(choice, .empty, logprobs, finish);
        }

        pub fn end(self: *Self, usage: openai.Usage) !void {
            if (self.include_usage) {
                self.event.clearRetainingCapacity();
                try openai.appendUsageChunk(&self.event, self.env, usage);
                try write(self.out, self.event.items);
            }
            try write(self.out, openai.done_event);
        }

        pub fn fail(self: *Self, err: openai.ApiError) !void {
            self.event.clearRetainingCapacity();
            try self.event.appendSlice("data: ");
            try openai.appendError(&self.event, err);
            try self.event.appendSlice("\n\n");
            try write(self.out, self.event.items);
            try write(self.out, openai.done_event);
        }

        pub fn whole(self: *Self, info: Info, results: []const openai.Choice, usage: openai.Usage) !void {
            self.setEnvelope(info.build);
            self.event.clearRetainingCapacity();
            try self.event.appendSlice("Status: 200 OK\nContent-Type: application/json\n\n");
            try openai.appendCompletionChoices(&self.event, self.env, results, usage);
            try write(self.out, self.event.items);
        }
    };
}

fn write(out: anytype, bytes: []const u8) ClientGone!void {
    out.writeAll(bytes) catch return error.ClientGone;
}

/// What went wrong during generation, as the API reports it.
fn generationError(err: anyerror) openai.ApiError {
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

/// The token loop: counts tokens (the reasoning's too), enforces the limit,
/// splits the thinking from the answer, and filters the answer's text.
pub const Generation = struct {
    filter: stream.TextFilter,
    n_predict: u32,
    tokens: u32 = 0,
    finish_reason: ?openai.Finish = null,
    /// The last step generated a token (rather than ending).
    last_was_token: bool = false,
    /// Ahead of the stop-string filter: stop strings apply to the answer only.
    thinking: ?reasoning.Reasoner = null,
    /// The reasoning text the last step released (maybe empty).
    reasoning_text: []const u8 = "",
    /// The answer's last text when the generation ends (two filter calls).
    tail: std.ArrayListUnmanaged(u8) = .empty,

    pub fn init(allocator: std.mem.Allocator, stops: []const []const u8, n_predict: u32) Generation {
        return .{ .filter = stream.TextFilter.init(allocator, stops), .n_predict = n_predict };
    }

    pub fn deinit(self: *Generation) void {
        self.filter.deinit();
        if (self.thinking) |*t| t.deinit();
        self.tail.deinit(self.filter.allocator);
    }

    /// Splits reasoning out of the text (Prepared.thinking: the tags, and
    /// whether the prompt opened the block; null leaves the text as it is).
    pub fn splitThinking(self: *Generation, start: ?reasoning.Start) void {
        if (start) |s| self.thinking = reasoning.Reasoner.init(self.filter.allocator, s);
    }

    /// Generates one token and returns the answer text it releases (maybe
    /// empty; its reasoning is in reasoning_text). Sets finish_reason when the
    /// completion is over.
    pub fn step(self: *Generation, backend: anytype) ![]const u8 {
        self.last_was_token = false;
        self.reasoning_text = "";
        // The app enforces the limit itself: a host need not honour n-predict.
        if (self.tokens >= self.n_predict) return self.end(.length);
        switch (try backend.next()) {
            .end => |reason| return self.end(reason),
            .token => |bytes| {
                self.tokens += 1;
                self.last_was_token = true;
                var answer = bytes;
                if (self.thinking) |*t| {
                    const parts = try t.push(bytes);
                    self.reasoning_text = parts.reasoning;
                    answer = parts.content;
                }
                const text = try self.filter.push(answer);
                if (self.filter.stopped) self.finish_reason = .stop;
                return text;
            },
        }
    }

    fn end(self: *Generation, reason: openai.Finish) ![]const u8 {
        self.finish_reason = reason;
        const t = if (self.thinking) |*t| t else return self.filter.finish();
        const parts = try t.finish();
        self.reasoning_text = parts.reasoning;
        self.tail.clearRetainingCapacity();
        try self.tail.appendSlice(self.filter.allocator, try self.filter.push(parts.content));
        if (self.filter.stopped) self.finish_reason = .stop;
        try self.tail.appendSlice(self.filter.allocator, try self.filter.finish());
        return self.tail.items;
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
    arena: std.mem.Allocator,
    backend: anytype,
    req: *const openai.ChatRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !Prepared {
    const ctx = cfg.ctx_size;
    const reserve = req.max_tokens orelse ctx / 5;
    if (reserve >= ctx)
        return diag.set(400, "max_tokens", "context_length_exceeded", "max_tokens ({d}) leaves no room for the messages: the model's context is {d} tokens.", .{ reserve, ctx });
    const plan = try planTools(allocator, backend, req, cfg);
    const fit = Fit{ .allocator = allocator, .messages = req.messages, .render = plan.render, .extras = .{ .thoughts = req.reasoning, .kwargs = req.template_kwargs }, .budget = ctx - reserve };

    var best = try fit.attempt(backend, 0, diag);
    // `best` changes below; the errdefer frees whichever prompt it holds then.
    errdefer allocator.free(best.prompt);
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
    const constraint = if (plan.format) |f| try tools.constraint(arena, f, req.tools, req.tool_choice, req.parallel_tool_calls) else null;
    var metadata = std.ArrayList(u8).init(allocator);
    defer metadata.deinit();
    try openai.appendMetadata(&metadata, req, .{ .n_predict = n_predict, .constraint = constraint, .preserved = &preserved_markers });
    backend.setMetadata(metadata.items) catch |err| return metadataError(err, req, constraint != null, diag);
    backend.setPrompt(best.prompt) catch return backendError(diag, "set the prompt");

    const info = backend.info(allocator) catch return backendError(diag, "read the token count");
    defer allocator.free(info);
    return .{
        .prompt_tokens = best.tokens,
        .n_predict = n_predict,
        .build = jsonInteger(allocator, info, "llama_build_number"),
        .format = plan.format,
        .prompt = best.prompt,
        .constraint = constraint,
        // Output constrained from its first token (response_format, a required
        // call) is the answer, whatever the prompt opened.
        .thinking = if (cfg.reasoning_format == .auto) blk: {
            var start = reasoning.startOf(best.prompt);
            start.opened = start.opened and !constrainedFromStart(req, constraint);
            break :blk start;
        } else null,
    };
}

/// Every marker the call and reasoning readers know, for the host's
/// `preserved-tokens`: where one is a control token of the model's vocabulary
/// (Gemma 4's), the host writes it into the text instead of dropping it; the
/// host ignores those that are not one token. End-of-turn tokens are not
/// among them, so they stay out of the text.
const preserved_markers = tools.markers ++ reasoning.markers;

/// The prompt's tokens as `generate` renders it for `req`, every turn kept
/// (Anthropic's count_tokens). A prompt over the whole context is a 400: the
/// host does not count it.
pub fn countPromptTokens(allocator: std.mem.Allocator, backend: anytype, req: *const openai.ChatRequest, cfg: Config, diag: *openai.Diagnostic) !u32 {
    const plan = try planTools(allocator, backend, req, cfg);
    const fit = Fit{ .allocator = allocator, .messages = req.messages, .render = plan.render, .extras = .{ .thoughts = req.reasoning, .kwargs = req.template_kwargs }, .budget = std.math.maxInt(u32) };
    const tried = try fit.attempt(backend, 0, diag);
    defer allocator.free(tried.prompt);
    if (!tried.fits) return diag.set(400, "messages", "context_length_exceeded", "The prompt is longer than this model's context of {d} tokens. Shorten the messages.", .{cfg.ctx_size});
    return tried.tokens;
}

/// Whether a grammar shapes the output from its first token (not lazily).
fn constrainedFromStart(req: *const openai.ChatRequest, constraint: ?openai.Constraint) bool {
    if (constraint) |c| return c.triggers.len == 0;
    return req.response_format != .text;
}

const Plan = struct {
    render: Render,
    /// The format calls are read in; null: no calls are read.
    format: ?tools.Format,
};

/// Decides how tools reach the prompt and how calls are read. A named
/// template with a native format uses it; other named templates are taught
/// the generic format. The model's own template is probed: rendered with the
/// tools, the prompt shows whether it lists them and in which format; if it
/// does not, the model is taught Hermes (ChatML models) or generic JSON.
/// With tool_choice "none" the tools stay out of the prompt and nothing is read.
fn planTools(allocator: std.mem.Allocator, backend: anytype, req: *const openai.ChatRequest, cfg: Config) !Plan {
    const active = req.tools.len > 0 and req.tool_choice != .none;
    if (!active) {
        var render = Render{ .template = cfg.template };
        // Past calls in a template that has no form for them: shown as text.
        if (cfg.template) |t| if (t.toolFormat() == null and hasToolTurns(req.messages)) {
            render.teach = .generic;
        };
        return .{ .render = render, .format = null };
    }
    if (cfg.template) |t| {
        if (t.toolFormat()) |f| return .{ .render = .{ .template = t, .tools = req.tools }, .format = f };
        return .{ .render = .{ .template = t, .tools = req.tools, .teach = .generic }, .format = .generic };
    }
    var request = std.ArrayList(u8).init(allocator);
    defer request.deinit();
    try appendTemplateRequestTools(&request, &.{.{ .role = .user, .content = "?" }}, req.tools);
    const probe = backend.renderTemplate(allocator, request.items) catch |err| switch (err) {
        error.NoTemplate => return .{ .render = .{ .template = .chatml, .tools = req.tools }, .format = .hermes },
        error.OutOfMemory => return error.OutOfMemory,
        else => {
            log.info("the model's chat template fails with tools: teaching the generic call format", .{});
            return .{ .render = .{ .template = null, .tools = req.tools, .teach = .generic }, .format = .generic };
        },
    };
    defer allocator.free(probe);
    if (tools.mentionsTools(probe, req.tools)) {
        const format = tools.detectFormat(probe);
        log.info("the model's chat template lists the tools; reading calls as {s}", .{@tagName(format)});
        return .{ .render = .{ .template = null, .tools = req.tools }, .format = format };
    }
    const format = tools.taughtFormat(probe);
    log.info("the model's chat template knows no tools; teaching the {s} call format", .{@tagName(format)});
    return .{ .render = .{ .template = null, .tools = req.tools, .teach = format }, .format = format };
}

fn hasToolTurns(messages: []const templates.Message) bool {
    for (messages) |m| if (m.role == .tool or m.tool_calls.len > 0) return true;
    return false;
}

/// Trying the conversation with its oldest turns dropped.
const Fit = struct {
    allocator: std.mem.Allocator,
    messages: []const templates.Message,
    render: Render,
    /// For the model's own template; thoughts by message index.
    extras: TemplateExtras = .{},
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
        var thoughts = std.ArrayList(?[]const u8).init(self.allocator);
        defer thoughts.deinit();
        var seen: usize = 0;
        var dropped: usize = 0;
        var at_front = true;
        for (self.messages, 0..) |m, i| {
            const is_last = i == self.messages.len - 1;
            if (m.role != .system and !is_last) {
                seen += 1;
                if (seen <= drop or (at_front and drop > 0 and (m.role == .assistant or m.role == .tool))) {
                    dropped += 1;
                    continue;
                }
            }
            if (m.role != .system) at_front = false;
            try selected.append(m);
            try thoughts.append(if (i < self.extras.thoughts.len) self.extras.thoughts[i] else null);
        }

        const extras = TemplateExtras{ .thoughts = thoughts.items, .kwargs = self.extras.kwargs };
        const prompt = try renderPrompt(self.allocator, backend, self.render, selected.items, extras, diag);
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
    render: Render,
    all_messages: []const templates.Message,
    extras: TemplateExtras,
    diag: *openai.Diagnostic,
) ![]u8 {
    var scratch = std.heap.ArenaAllocator.init(allocator);
    defer scratch.deinit();
    var messages = all_messages;
    var listed = render.tools;
    var with = extras;
    if (render.teach) |format| {
        messages = try tools.teach(scratch.allocator(), all_messages, render.tools, format);
        listed = &.{};
        with.thoughts = &.{}; // the taught messages are not the client's, one for one
    }
    if (render.template) |t| return templates.renderTools(allocator, t, messages, listed);

    var request = std.ArrayList(u8).init(allocator);
    defer request.deinit();
    try appendTemplateRequestWith(&request, messages, listed, with);
    return backend.renderTemplate(allocator, request.items) catch |err| switch (err) {
        error.NoTemplate => {
            log.info("the model has no chat template of its own: using chatml", .{});
            return templates.renderTools(allocator, .chatml, messages, listed);
        },
        error.TemplateFailed => diag.set(400, "messages", null, "The model's chat template rejected these messages (for example, some templates require user and assistant turns to alternate). The server log has the template's message.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, "render the chat template"),
    };
}

/// `{"messages":[{"role":..,"content":..}],"add_generation_prompt":true}`
pub fn appendTemplateRequest(out: *std.ArrayList(u8), messages: []const templates.Message) !void {
    return appendTemplateRequestTools(out, messages, &.{});
}

/// What else the model's own template may be given.
pub const TemplateExtras = struct {
    /// Each message's reasoning_content, by index.
    thoughts: []const ?[]const u8 = &.{},
    /// The client's template variables, a JSON object.
    kwargs: ?[]const u8 = null,
};

/// The template request with calls and results in the messages (OpenAI's
/// shape) and, when there are any, the tools.
pub fn appendTemplateRequestTools(out: *std.ArrayList(u8), messages: []const templates.Message, listed: []const templates.Tool) !void {
    return appendTemplateRequestWith(out, messages, listed, .{});
}

/// The template request with, where there are any, the messages'
/// `reasoning_content` and `"chat_template_kwargs"`.
pub fn appendTemplateRequestWith(out: *std.ArrayList(u8), messages: []const templates.Message, listed: []const templates.Tool, extras: TemplateExtras) !void {
    const w = out.writer();
    try w.writeAll("{\"messages\":[");
    for (messages, 0..) |m, i| {
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"role\":\"{s}\",\"content\":", .{m.role.name()});
        try std.json.encodeJsonString(m.content, .{}, w);
        if (m.tool_calls.len > 0) {
            try w.writeAll(",\"tool_calls\":[");
            for (m.tool_calls, 0..) |c, j| {
                if (j > 0) try w.writeByte(',');
                try w.writeAll("{\"id\":");
                try std.json.encodeJsonString(c.id, .{}, w);
                try w.writeAll(",\"type\":\"function\",\"function\":{\"name\":");
                try std.json.encodeJsonString(c.name, .{}, w);
                try w.writeAll(",\"arguments\":");
                try std.json.encodeJsonString(c.arguments, .{}, w);
                try w.writeAll("}}");
            }
            try w.writeByte(']');
        }
        if (m.tool_call_id) |id| {
            try w.writeAll(",\"tool_call_id\":");
            try std.json.encodeJsonString(id, .{}, w);
        }
        if (m.name) |name| {
            try w.writeAll(",\"name\":");
            try std.json.encodeJsonString(name, .{}, w);
        }
        if (i < extras.thoughts.len) if (extras.thoughts[i]) |thought| {
            try w.writeAll(",\"reasoning_content\":");
            try std.json.encodeJsonString(thought, .{}, w);
        };
        try w.writeByte('}');
    }
    try w.writeByte(']');
    if (listed.len > 0) {
        try w.writeAll(",\"tools\":[");
        for (listed, 0..) |t, i| {
            if (i > 0) try w.writeByte(',');
            try std.json.stringify(t.value, .{}, w);
        }
        try w.writeByte(']');
    }
    if (extras.kwargs) |k| try w.print(",\"chat_template_kwargs\":{s}", .{k});
    try w.writeAll(",\"add_generation_prompt\":true}");
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

/// The host refused the options: what the client sent that it could not take.
fn metadataError(err: anyerror, req: *const openai.ChatRequest, has_constraint: bool, diag: *openai.Diagnostic) error{InvalidRequest} {
    if (err != error.InvalidInput) return backendError(diag, "set the generation options");
    if (req.logit_bias != null)
        return diag.set(400, "logit_bias", null, "The model refused 'logit_bias': a key is not a token id of this model (or the host refused the other options).", .{});
    if (has_constraint)
        return diag.set(400, "tools", null, "The functions' 'parameters' schemas cannot be turned into a grammar for this model's calls.", .{});
    if (req.response_format == .json_schema)
        return diag.set(400, "response_format.json_schema.schema", null, "This JSON Schema cannot be turned into a grammar.", .{});
    return diag.set(400, null, null, "The model refused the generation options.", .{});
}

fn backendError(diag: *openai.Diagnostic, what: []const u8) error{InvalidRequest} {
    return diag.set(500, null, null, "The model backend could not {s}; the server log has the details.", .{what});
}

// ---------------------------------------------------------------------------

const testing = std.testing;
const support = @import("test_support.zig");
const FakeBackend = support.FakeBackend;
const expectInOrder = support.expectInOrder;

const Run = support.Run;

fn run(backend: *FakeBackend, body: []const u8, cfg: Config) !Run {
    var r = Run.init();
    errdefer r.deinit();
    var parse_diag = openai.Diagnostic{};
    var req = try openai.parseChatRequest(testing.allocator, body, &parse_diag);
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

const test_cfg = Config{ .model_id = "tiny", .ctx_size = 1000, .template = .chatml, .created = 1, .id = "chatcmpl-x" };

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
    var diag = openai.Diagnostic{};
    var req = try openai.parseChatRequest(testing.allocator, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", &diag);
    defer req.deinit();
    try testing.expectError(error.ClientGone, complete(testing.allocator, &backend, support.FailingWriter{}, &req, test_cfg, &diag));
    try testing.expectEqual(@as(usize, 0), backend.next_index);
}

const weather_tools =
    \\"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]
;
const call_tokens = [_][]const u8{ "Let me look.", "\n<tool", "_call>\n{\"na", "me\": \"get_weather\", ", "\"arguments\": {\"city\": ", "\"Par", "is\"}}\n</tool_call>" };

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

test "the Anthropic output writes the same generation as Messages events" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &call_tokens };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend,
        \\{"model":"tiny","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"weather?"}],
        \\"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}
    , test_cfg, &out);
    const text = out.items;
    try expectInOrder(text, &.{
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"tiny\",\"content\":[],",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look.\"}",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
        "\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_",
        "\"name\":\"get_weather\",\"input\":{}}",
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":",
        "{\"type\":\"content_block_stop\",\"index\":1}",
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    });
    try testing.expect(std.mem.indexOf(u8, text, "tool_call>") == null);
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

/// Runs an Anthropic request on the fake backend, streamed or whole.
fn runAnthropic(backend: *FakeBackend, body: []const u8, cfg: Config, out: *std.ArrayList(u8)) !void {
    const anthropic = @import("anthropic.zig");
    var diag = openai.Diagnostic{};
    var parsed = try anthropic.parseRequest(testing.allocator, body, .messages, &diag);
    defer parsed.deinit();
    var output = anthropic.Output(@TypeOf(out.writer())).init(testing.allocator, out.writer(), "msg_1", "tiny", parsed.chat.stop, parsed.thinking);
    defer output.deinit();
    try generate(testing.allocator, backend, &output, &parsed.chat, cfg, &diag);
}

test "Anthropic thinking: a thinking block with its signature before the text, streamed and whole" {
    const thinking_tokens = [_][]const u8{ "hmm", " yes", "</think>", "Four." };
    const body = "{\"model\":\"tiny\",\"max_tokens\":2000,\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"}],\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024}";
    const signature = comptime blk: {
        @setEvalBranchQuota(100000);
        var digest: [32]u8 = undefined;
        std.crypto.hash.sha2.Sha256.hash("hmm yes", &digest, .{});
        break :blk std.fmt.bytesToHex(digest, .lower);
    };
    var cfg = test_cfg;
    cfg.template = null;
    cfg.ctx_size = 4096; // room for a max_tokens over the least thinking budget

    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &thinking_tokens, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var streamed = std.ArrayList(u8).init(testing.allocator);
    defer streamed.deinit();
    try runAnthropic(&backend, body ++ ",\"stream\":true}", cfg, &streamed);
    // the template was asked to think
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "\"chat_template_kwargs\":{\"enable_thinking\":true}") != null);
    try expectInOrder(streamed.items, &.{
        "event: ping\n",
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"" ++ signature ++ "\"}}",
        "{\"type\":\"content_block_stop\",\"index\":0}",
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Four.\"}",
        "{\"type\":\"content_block_stop\",\"index\":1}",
        "\"stop_reason\":\"end_turn\"",
    });

    var whole = std.ArrayList(u8).init(testing.allocator);
    defer whole.deinit();
    try runAnthropic(&backend, body ++ "}", cfg, &whole);
    try testing.expect(std.mem.indexOf(u8, whole.items, "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm yes\",\"signature\":\"" ++ signature ++ "\"},{\"type\":\"text\",\"text\":\"Four.\"}]") != null);
}

test "Anthropic without thinking: the template is asked not to think, and a thought is left out" {
    var cfg = test_cfg;
    cfg.template = null;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "hmm", "</think>", "Four." }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend, "{\"model\":\"tiny\",\"max_tokens\":20,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"}]}", cfg, &out);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "\"chat_template_kwargs\":{\"enable_thinking\":false}") != null);
    try testing.expect(std.mem.indexOf(u8, out.items, "thinking") == null);
    try testing.expect(std.mem.indexOf(u8, out.items, "hmm") == null);
    try testing.expect(std.mem.indexOf(u8, out.items, "\"text\":\"Four.\"") != null);
    // the thought's tokens are output tokens all the same
    try testing.expect(std.mem.indexOf(u8, out.items, "\"output_tokens\":3}") != null);
}

test "Anthropic thinking with display omitted: an empty thinking block, signed" {
    var cfg = test_cfg;
    cfg.template = null;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "secret", "</think>", "ok" }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend, "{\"model\":\"tiny\",\"max_tokens\":20,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"thinking\":{\"type\":\"adaptive\",\"display\":\"omitted\"}}", cfg, &out);
    try testing.expect(std.mem.indexOf(u8, out.items, "secret") == null);
    try testing.expect(std.mem.indexOf(u8, out.items, "thinking_delta") == null);
    try expectInOrder(out.items, &.{ "\"type\":\"thinking\",\"thinking\":\"\"", "signature_delta", "content_block_stop", "\"text\":\"ok\"" });
}

test "Anthropic thinking blocks of earlier turns reach the model's template as reasoning_content" {
    var cfg = test_cfg;
    cfg.template = null;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend,
        \\{"model":"tiny","max_tokens":20,"messages":[{"role":"user","content":"q"},
        \\{"role":"assistant","content":[{"type":"thinking","thinking":"because","signature":"s"},{"type":"text","text":"a"}]},{"role":"user","content":"q2"}]}
    , cfg, &out);
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "{\"role\":\"assistant\",\"content\":\"a\",\"reasoning_content\":\"because\"}") != null);
}

test "countPromptTokens counts the prompt the completion generates from" {
    const anthropic = @import("anthropic.zig");
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    const body = "{\"model\":\"tiny\",\"max_tokens\":20,\"system\":\"S\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";
    var diag = openai.Diagnostic{};
    var parsed = try anthropic.parseRequest(testing.allocator, body, .count_tokens, &diag);
    defer parsed.deinit();
    const counted = try countPromptTokens(testing.allocator, &backend, &parsed.chat, test_cfg, &diag);
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend, body, test_cfg, &out);
    try testing.expectEqual(@as(u32, @intCast(backend.prompt.items.len / 4)), counted);
    var buf: [64]u8 = undefined;
    try testing.expect(std.mem.indexOf(u8, out.items, try std.fmt.bufPrint(&buf, "\"input_tokens\":{d},", .{counted})) != null);
}

test "Anthropic thinking before a tool call: the thinking block is signed and closed before the tool_use block" {
    const tokens = [_][]const u8{ "<think>", "Need the weather.", "</think>\n" } ++ call_tokens;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &tokens };
    defer backend.deinit();
    var cfg = test_cfg;
    cfg.ctx_size = 4096;
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runAnthropic(&backend,
        \\{"model":"tiny","max_tokens":2000,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"weather?"}],
        \\"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]}
    , cfg, &out);
    try expectInOrder(out.items, &.{
        "\"index\":0,\"content_block\":{\"type\":\"thinking\"",
        "\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Need the weather.\"}",
        "\"index\":0,\"delta\":{\"type\":\"signature_delta\"",
        "{\"type\":\"content_block_stop\",\"index\":0}",
        "\"index\":1,\"content_block\":{\"type\":\"text\"",
        "\"index\":2,\"content_block\":{\"type\":\"tool_use\"",
        "\"stop_reason\":\"tool_use\"",
    });
    try testing.expectEqual(@as(usize, 1), std.mem.count(u8, out.items, "signature_delta"));
}
