//! POST /v1/completions, OpenAI's legacy text completion: the prompt is used
//! raw (no chat template), one or more prompts, `n` choices each. Each choice
//! has its own execution context on the graph, and the contexts of a prompt
//! generate in turn so that the host decodes them together.
//!
//! `backend` is the first context: anything with the methods of nn.Backend
//! used here (setMetadata, setPrompt, setPromptTokens, info, output, next,
//! tokenLogprobs, finish, fork); the tests below drive a scripted fake.

const std = @import("std");
const openai = @import("openai.zig");
const chat = @import("chat.zig");
const embeddings = @import("embeddings.zig");

const log = std.log.scoped(.completions);
const Value = std.json.Value;
const Input = embeddings.Input;

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
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, diag: *openai.Diagnostic) !CompletionRequest {
    var req = CompletionRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();
    const obj = try openai.parseObject(arena, body, diag);

    req.model = try openai.optString(obj, "model", diag);
    req.prompts = try embeddings.parseInputs(arena, obj.get("prompt"), "prompt", diag);
    req.stream = (try openai.optBool(obj, "stream", diag)) orelse false;
    if (obj.get("stream_options")) |options| switch (options) {
        .null => {},
        .object => |o| req.include_usage = (try openai.optBool(o, "include_usage", diag)) orelse false,
        else => return openai.typeError(diag, "stream_options", "an object", options),
    };
    if (try openai.optInteger(obj, "max_tokens", diag)) |max| {
        if (max < 0) return diag.set(400, "max_tokens", null, "Invalid 'max_tokens': {d}. It must be at least 0.", .{max});
        req.max_tokens = @intCast(@min(max, std.math.maxInt(u32)));
    }
    req.temperature = try openai.optNumberIn(obj, "temperature", 0, 2, diag);
    req.top_p = try openai.optNumberIn(obj, "top_p", 0, 1, diag);
    req.presence_penalty = try openai.optNumberIn(obj, "presence_penalty", -2, 2, diag);
    req.frequency_penalty = try openai.optNumberIn(obj, "frequency_penalty", -2, 2, diag);
    req.seed = try openai.optInteger(obj, "seed", diag);
    req.stop = try openai.parseStop(arena, obj.get("stop"), diag);
    req.echo = (try openai.optBool(obj, "echo", diag)) orelse false;
    _ = try openai.optString(obj, "user", diag);

    if (try openai.optInteger(obj, "logprobs", diag)) |k| {
        if (k < 0 or k > max_logprobs)
            return diag.set(400, "logprobs", null, "Invalid 'logprobs': {d}. It must be between 0 and {d}.", .{ k, max_logprobs });
        req.logprobs = @intCast(k);
    }
    if (req.echo and req.logprobs != null)
        return diag.set(400, "echo", null, "'echo' together with 'logprobs' is not supported: this server gives the log-probabilities of generated tokens only, not of the prompt's. Drop one of them.", .{});
    req.logit_bias = try parseLogitBias(arena, obj.get("logit_bias"), diag);

    if (try openai.optInteger(obj, "n", diag)) |n| {
        if (n < 1 or n > max_choices)
            return diag.set(400, "n", null, "Invalid 'n': {d}. This server generates from 1 to {d} choices per prompt.", .{ n, max_choices });
        req.n = @intCast(n);
    }
    if (try openai.optInteger(obj, "best_of", diag)) |best_of| {
        if (best_of < req.n)
            return diag.set(400, "best_of", null, "'best_of' ({d}) must be at least 'n' ({d}).", .{ best_of, req.n });
        if (best_of > req.n)
            return diag.set(400, "best_of", null, "'best_of' greater than 'n' is not supported: this server does not generate extra candidates to rank them. Leave 'best_of' out or set it to 'n'.", .{});
    }
    if (try openai.optString(obj, "suffix", diag)) |suffix| if (suffix.len > 0)
        return diag.set(400, "suffix", null, "'suffix' is not supported: this server does not insert text between a prompt and a suffix (fill-in-the-middle). Leave 'suffix' out.", .{});
    return req;
}

/// `{"50256": -100}` keys are token ids, values from -100 (ban) to 100.
fn parseLogitBias(arena: std.mem.Allocator, value: ?Value, diag: *openai.Diagnostic) !?[]const u8 {
    const v = value orelse return null;
    if (v == .null) return null;
    if (v != .object) return openai.typeError(diag, "logit_bias", "an object mapping token ids to biases", v);
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
            else => |other| return openai.typeError(diag, "logit_bias", "numbers as values", other),
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

// ---------------------------------------------------------------------------
// Running a completion

pub const Config = struct {
    model_id: []const u8,
    ctx_size: u32,
    created: i64,
    /// `cmpl-...`, the same in every chunk.
    id: []const u8,
    /// Where seeds start for n > 1 without a `seed`, so that choices differ.
    random_seed: u32 = 0,
    /// The host's decoding slots (LLAMAEDGE_PARALLEL): the most choices generated at once.
    slots: u32 = 4,
};

/// A prompt checked against the model: its token count, and its text for `echo`.
const Prompt = struct {
    input: Input,
    tokens: u32,
    text: []const u8,
};

/// One logprobs entry: a generated token.
const TokenLogprob = struct {
    token: []const u8,
    logprob: f64,
    /// `{"token":logprob,...}`, serialized.
    top: []const u8,
    text_offset: usize,
};

/// One choice as it generates.
fn Choice(comptime Backend: type) type {
    return struct {
        backend: Backend,
        gen: chat.Generation,
        index: usize,
        text: std.ArrayList(u8),
        logprobs: std.ArrayList(TokenLogprob),
        /// Logprobs entries not yet sent (streaming).
        logprobs_sent: usize = 0,
        /// Bytes of the text so far as generated (echo included): the next token's offset.
        offset: usize = 0,
    };
}

/// Runs the completion. error.InvalidRequest (with `diag` set) comes before
/// anything was written; errors after a stream began are written into it.
/// error.ClientGone: the client left, stop at once.
pub fn complete(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    req: *const CompletionRequest,
    cfg: Config,
    diag: *openai.Diagnostic,
) !void {
    const Backend = @TypeOf(backend.*);
    var arena_state = std.heap.ArenaAllocator.init(allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();

    // Every prompt is checked (and counted) before anything is generated, so
    // that a prompt too long is a 400 and not an error in the middle of a stream.
    {
        var metadata = std.ArrayList(u8).init(allocator);
        defer metadata.deinit();
        try appendMetadata(&metadata, req, cfg, 0);
        backend.setMetadata(metadata.items) catch |err| switch (err) {
            error.InvalidInput => return diag.set(400, "logit_bias", null, "The model refused 'logit_bias': a key is not a token id of this model.", .{}),
            else => return backendError(diag, "set the generation options"),
        };
    }
    const prompts = try arena.alloc(Prompt, req.prompts.len);
    var build: ?i64 = null;
    for (req.prompts, prompts) |input, *prompt| {
        try setPrompt(backend, input, cfg.ctx_size, diag);
        const info = backend.info(allocator) catch return backendError(diag, "read the token count");
        defer allocator.free(info);
        const tokens = jsonInteger(allocator, info, "input_tokens") orelse {
            log.err("get_output(1) gave no input_tokens: {s}", .{info});
            return backendError(diag, "read the token count");
        };
        build = build orelse jsonInteger(allocator, info, "llama_build_number");
        if (tokens >= cfg.ctx_size)
            return diag.set(400, "prompt", "context_length_exceeded", "This model's maximum context length is {d} tokens, and your prompt has {d}. Shorten the prompt.", .{ cfg.ctx_size, tokens });
        const text = switch (input) {
            .text => |t| t,
            .tokens => if (req.echo) backend.output(arena, 3, 1024) catch return backendError(diag, "read the prompt's text") else "",
        };
        prompt.* = .{ .input = input, .tokens = @intCast(@max(tokens, 0)), .text = text };
    }

    var contexts = try arena.alloc(Backend, req.n);
    contexts[0] = backend.*;
    for (contexts[1..]) |*ctx| ctx.* = backend.fork() catch return backendError(diag, "open an execution context per choice");

    var fingerprint_buf: [40]u8 = undefined;
    const run = Run(@TypeOf(out), Backend){
        .allocator = allocator,
        .arena = arena,
        .out = out,
        .req = req,
        .cfg = cfg,
        .fingerprint = if (build) |b| if (b > 0) std.fmt.bufPrint(&fingerprint_buf, "fp_llamaedge_b{d}", .{b}) catch "fp_llamaedge" else "fp_llamaedge" else "fp_llamaedge",
    };
    if (req.stream) return run.stream(contexts, prompts);
    return run.whole(contexts, prompts, diag);
}

/// The options of choice `choice` (set_input 1): the sampling options, the
/// limit, logprobs and logit-bias. Choices differ by seed: seed+i.
fn appendMetadata(out: *std.ArrayList(u8), req: *const CompletionRequest, cfg: Config, choice: usize) !void {
    const w = out.writer();
    try w.print("{{\"n-predict\":{d}", .{req.max_tokens});
    if (req.temperature) |x| try w.print(",\"temp\":{d}", .{x});
    if (req.top_p) |x| try w.print(",\"top-p\":{d}", .{x});
    if (req.seed) |s| {
        try w.print(",\"seed\":{d}", .{s +% @as(i64, @intCast(choice))});
    } else if (req.n > 1) {
        try w.print(",\"seed\":{d}", .{@as(u64, cfg.random_seed) + choice});
    }
    if (req.presence_penalty) |x| try w.print(",\"presence-penalty\":{d}", .{x});
    if (req.frequency_penalty) |x| try w.print(",\"frequency-penalty\":{d}", .{x});
    if (req.logprobs) |k| try w.print(",\"logprobs\":true,\"top-logprobs\":{d}", .{k});
    if (req.logit_bias) |bias| try w.print(",\"logit-bias\":{s}", .{bias});
    try w.writeByte('}');
}

fn setPrompt(backend: anytype, input: Input, ctx_size: u32, diag: *openai.Diagnostic) !void {
    const result = switch (input) {
        .text => |t| backend.setPrompt(t),
        .tokens => |t| backend.setPromptTokens(t),
    };
    result catch |err| switch (err) {
        error.PromptTooLong => return diag.set(400, "prompt", "context_length_exceeded", "This model's maximum context length is {d} tokens, and the prompt is longer. Shorten the prompt.", .{ctx_size}),
        error.InvalidInput => return diag.set(400, "prompt", null, "The model refused the prompt: it holds a token id the model does not have.", .{}),
        else => return backendError(diag, "set the prompt"),
    };
}

fn Run(comptime Out: type, comptime Backend: type) type {
    return struct {
        const Self = @This();
        const C = Choice(Backend);

        allocator: std.mem.Allocator,
        arena: std.mem.Allocator,
        out: Out,
        req: *const CompletionRequest,
        cfg: Config,
        fingerprint: []const u8,

        fn envelope(self: Self) openai.Envelope {
            return .{ .id = self.cfg.id, .created = self.cfg.created, .model = self.cfg.model_id, .system_fingerprint = self.fingerprint };
        }

        /// Sets the options and the prompt on each context of a prompt's choices.
        fn start(self: Self, choices: []C, contexts: []Backend, prompt: Prompt, prompt_index: usize) !void {
            var metadata = std.ArrayList(u8).init(self.allocator);
            defer metadata.deinit();
            for (choices, contexts, 0..) |*choice, *ctx, i| {
                metadata.clearRetainingCapacity();
                try appendMetadata(&metadata, self.req, self.cfg, i);
                // The options and the prompt were checked already: a failure now is the host's.
                try ctx.setMetadata(metadata.items);
                switch (prompt.input) {
                    .text => |t| try ctx.setPrompt(t),
                    .tokens => |t| try ctx.setPromptTokens(t),
                }
                const room = self.cfg.ctx_size - prompt.tokens;
                choice.* = .{
                    .backend = ctx.*,
                    .gen = chat.Generation.init(self.allocator, self.req.stop, @min(self.req.max_tokens, room)),
                    .index = prompt_index * self.req.n + i,
                    .text = std.ArrayList(u8).init(self.arena),
                    .logprobs = std.ArrayList(TokenLogprob).init(self.arena),
                };
                if (self.req.echo) {
                    try choice.text.appendSlice(prompt.text);
                    choice.offset = prompt.text.len;
                }
            }
        }

        /// The choices of a prompt in groups of at most the host's decoding
        /// slots: a choice waiting for a slot would otherwise wait for ever on
        /// the others, which wait for this app to read them.
        fn waveSize(self: Self, n_choices: usize) usize {
            return @max(1, @min(self.cfg.slots, n_choices));
        }

        /// Generates a prompt's choices in waves (see waveSize), in turn, one
        /// token each, so that the host decodes a wave's choices together.
        /// With an `event` buffer, each piece of text is sent as it comes and
        /// each end as a finish chunk; without, the choices keep their text.
        /// A generation failure finishes the wave's contexts and is returned,
        /// for the caller to report.
        fn generate(self: Self, choices: []C, event: ?*std.ArrayList(u8)) !?anyerror {
            const size = self.waveSize(choices.len);
            var first: usize = 0;
            while (first < choices.len) : (first += size) {
                const wave = choices[first..@min(first + size, choices.len)];
                var active = wave.len;
                while (active > 0) {
                    active = 0;
                    for (wave) |*choice| {
                        if (choice.gen.finish_reason != null) continue;
                        const text = self.step(choice) catch |err| {
                            for (wave) |*c| c.backend.finish();
                            return @as(?anyerror, err);
                        };
                        if (event) |e| {
                            if (text.len > 0) try self.sendChunk(e, choice, text, null);
                            choice.text.clearRetainingCapacity(); // sent
                        }
                        if (choice.gen.finish_reason) |reason| {
                            choice.backend.finish();
                            if (event) |e| try self.sendChunk(e, choice, "", reason);
                        } else active += 1;
                    }
                }
            }
            return null;
        }

        /// One token for one choice: the text it releases, and its logprobs entry.
        fn step(self: Self, choice: *C) ![]const u8 {
            const before = choice.gen.tokens;
            const text = try choice.gen.step(&choice.backend);
            if (choice.gen.tokens > before and self.req.logprobs != null) {
                const json = try choice.backend.tokenLogprobs(self.allocator);
                defer self.allocator.free(json);
                const entry = try parseTokenLogprob(self.arena, json, choice.offset) orelse {
                    log.err("get_output_single(2) is not a token's logprobs: {s}", .{json});
                    return error.BackendFailed;
                };
                choice.offset += entry.n_bytes;
                try choice.logprobs.append(entry.entry);
            }
            try choice.text.appendSlice(text);
            return text;
        }

        fn whole(self: Self, contexts: []Backend, prompts: []const Prompt, diag: *openai.Diagnostic) !void {
            const all = try self.arena.alloc(C, prompts.len * self.req.n);
            var started: usize = 0;
            defer for (all[0..started]) |*c| c.gen.deinit();
            var completion_tokens: u64 = 0;
            var prompt_tokens: u64 = 0;
            for (prompts, 0..) |prompt, p| {
                const choices = all[p * self.req.n ..][0..self.req.n];
                self.start(choices, contexts, prompt, p) catch |err| return generationError(err, diag);
                started += choices.len;
                prompt_tokens += prompt.tokens;
                if (try self.generate(choices, null)) |err| return generationError(err, diag);
                for (choices) |choice| completion_tokens += choice.gen.tokens;
            }

            var body = std.ArrayList(u8).init(self.allocator);
            defer body.deinit();
            const w = body.writer();
            try w.writeAll("Status: 200 OK\nContent-Type: application/json\n\n");
            try appendEnvelope(w, self.envelope());
            try w.writeAll(",\"choices\":[");
            for (all, 0..) |*choice, i| {
                if (i > 0) try w.writeByte(',');
                try appendChoice(w, choice.index, choice.text.items, if (self.req.logprobs != null) choice.logprobs.items else null, choice.gen.finish_reason);
            }
            try w.writeAll("],");
            try appendUsage(w, prompt_tokens, completion_tokens);
            try w.writeByte('}');
            try write(self.out, body.items);
        }

        fn stream(self: Self, contexts: []Backend, prompts: []const Prompt) !void {
            try write(self.out, "Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n\n");
            var event = std.ArrayList(u8).init(self.allocator);
            defer event.deinit();
            const choices = try self.arena.alloc(C, self.req.n);
            var completion_tokens: u64 = 0;
            var prompt_tokens: u64 = 0;
            for (prompts, 0..) |prompt, p| {
                self.start(choices, contexts, prompt, p) catch |err| return self.streamError(&event, err);
                defer for (choices) |*c| c.gen.deinit();
                prompt_tokens += prompt.tokens;
                if (self.req.echo) for (choices) |*choice| {
                    try self.sendChunk(&event, choice, prompt.text, null);
                    choice.text.clearRetainingCapacity(); // sent
                };
                if (try self.generate(choices, &event)) |err| return self.streamError(&event, err);
                for (choices) |choice| completion_tokens += choice.gen.tokens;
            }
            if (self.req.include_usage) {
                event.clearRetainingCapacity();
                const w = event.writer();
                try w.writeAll("data: ");
                try appendEnvelope(w, self.envelope());
                try w.writeAll(",\"choices\":[],");
                try appendUsage(w, prompt_tokens, completion_tokens);
                try w.writeAll("}\n\n");
                try write(self.out, event.items);
            }
            try write(self.out, openai.done_event);
        }

        /// One `data: {text_completion}` event for one choice, with the
        /// logprobs entries not sent yet.
        fn sendChunk(self: Self, event: *std.ArrayList(u8), choice: *C, text: []const u8, finish: ?openai.Finish) !void {
            event.clearRetainingCapacity();
            const w = event.writer();
            try w.writeAll("data: ");
            try appendEnvelope(w, self.envelope());
            try w.writeAll(",\"choices\":[");
            const pending = if (self.req.logprobs != null) choice.logprobs.items[choice.logprobs_sent..] else null;
            try appendChoice(w, choice.index, text, pending, finish);
            choice.logprobs_sent = choice.logprobs.items.len;
            try w.writeAll("]}\n\n");
            try write(self.out, event.items);
        }

        fn streamError(self: Self, event: *std.ArrayList(u8), err: anyerror) !void {
            if (err == error.ClientGone) return error.ClientGone;
            var diag = openai.Diagnostic{};
            generationError(err, &diag) catch {};
            event.clearRetainingCapacity();
            try event.appendSlice("data: ");
            try openai.appendError(event, diag.err);
            try event.appendSlice("\n\n");
            try write(self.out, event.items);
            try write(self.out, openai.done_event);
        }
    };
}

fn write(out: anytype, bytes: []const u8) error{ClientGone}!void {
    out.writeAll(bytes) catch return error.ClientGone;
}

fn generationError(err: anyerror, diag: *openai.Diagnostic) error{ InvalidRequest, ClientGone, OutOfMemory } {
    return switch (err) {
        error.ClientGone => error.ClientGone,
        error.OutOfMemory => error.OutOfMemory,
        else => embeddings.serverError(diag, "The model failed while generating; the server log has the details.", .{}),
    };
}

fn backendError(diag: *openai.Diagnostic, what: []const u8) error{InvalidRequest} {
    return embeddings.serverError(diag, "The model backend could not {s}; the server log has the details.", .{what});
}

fn jsonInteger(allocator: std.mem.Allocator, json: []const u8, key: []const u8) ?i64 {
    const parsed = std.json.parseFromSlice(Value, allocator, json, .{}) catch return null;
    defer parsed.deinit();
    if (parsed.value != .object) return null;
    const v = parsed.value.object.get(key) orelse return null;
    return if (v == .integer) v.integer else null;
}

/// The host's JSON for one token (`{"token","bytes","logprob","top_logprobs":[...]}`)
/// as a logprobs entry; null when it is not that shape.
fn parseTokenLogprob(arena: std.mem.Allocator, json: []const u8, offset: usize) !?struct { entry: TokenLogprob, n_bytes: usize } {
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
fn appendLogprob(w: anytype, x: f64) !void {
    const finite = if (std.math.isFinite(x)) x else if (x < 0) -std.math.floatMax(f64) else 0;
    try w.print("{d}", .{finite});
}

// ---------------------------------------------------------------------------
// Response JSON

fn appendEnvelope(w: anytype, env: openai.Envelope) !void {
    try w.writeAll("{\"id\":");
    try std.json.encodeJsonString(env.id, .{}, w);
    try w.print(",\"object\":\"text_completion\",\"created\":{d},\"model\":", .{env.created});
    try std.json.encodeJsonString(env.model, .{}, w);
    try w.writeAll(",\"system_fingerprint\":");
    try std.json.encodeJsonString(env.system_fingerprint, .{}, w);
}

fn appendChoice(w: anytype, index: usize, text: []const u8, logprobs: ?[]const TokenLogprob, finish: ?openai.Finish) !void {
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

fn appendUsage(w: anytype, prompt_tokens: u64, completion_tokens: u64) !void {
    try w.print("\"usage\":{{\"prompt_tokens\":{d},\"completion_tokens\":{d},\"total_tokens\":{d}}}", .{ prompt_tokens, completion_tokens, prompt_tokens + completion_tokens });
}

// ---------------------------------------------------------------------------

const testing = std.testing;
const support = @import("test_support.zig");

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

    const Error = @import("nn.zig").Error || std.mem.Allocator.Error;

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

    pub fn info(self: *FakeBackend, allocator: std.mem.Allocator) Error![]u8 {
        return std.fmt.allocPrint(allocator, "{{\"input_tokens\":{d},\"llama_build_number\":7}}", .{self.prompt_tokens});
    }

    pub fn output(self: *FakeBackend, allocator: std.mem.Allocator, index: u32, _: usize) Error![]u8 {
        std.debug.assert(index == 3);
        return std.fmt.allocPrint(allocator, "<{d} tokens>", .{self.prompt_tokens});
    }

    pub fn next(self: *FakeBackend) Error!@import("nn.zig").Step {
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
    diag: openai.Diagnostic = .{},
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
    var parse_diag = openai.Diagnostic{};
    var req = try parseRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    var backend = FakeBackend{ .calls = &r.calls, .tokens = tokens, .forks = &r.forks, .fail_at = options.fail_at, .refuse_metadata = options.refuse_metadata };
    r.result = complete(testing.allocator, &backend, r.out.writer(), &req, options.cfg, &r.diag);
}

fn newRun() TestRun {
    return .{ .out = std.ArrayList(u8).init(testing.allocator), .calls = Calls.init(testing.allocator) };
}

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    try support.expectInvalid(parseRequest, body, 400, param, message_part);
}

test "a full completions request is parsed" {
    var diag = openai.Diagnostic{};
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
    var diag = openai.Diagnostic{};
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
