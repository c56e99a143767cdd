//! POST /v1/completions, OpenAI's legacy text completion: the prompt is used
//! raw (no chat template), one or more prompts, `n` choices each. Each choice
//! has its own execution context on the graph, and the contexts of a prompt
//! generate in turn so that the host decodes them together.
//!
//! `backend` is the first context: anything with the methods of nn.Backend
//! used here (setMetadata, setPrompt, setPromptTokens, info, output, next,
//! tokenLogprobs, finish, fork); tests.zig drives scripted fakes.

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const response = @import("response.zig");
const inputs = @import("../inputs.zig");
const generation = @import("../generation.zig");
const chat_response = @import("../chat/response.zig");

const Diagnostic = shared.api_error.Diagnostic;
const CompletionRequest = request.CompletionRequest;
const Input = inputs.Input;
const Finish = generation.Finish;
const TokenLogprob = response.TokenLogprob;

const log = std.log.scoped(.completions);

pub const Config = struct {
    model_id: []const u8,
    ctx_size: u32,
    created: i64,
    /// `cmpl-...`, the same in every chunk.
    id: []const u8,
    /// Where seeds start for n > 1 without a `seed`, so that choices differ.
    random_seed: u32 = 0,
    /// The host's decoding slots (LLAMAEDGE_PARALLEL): the most choices generated at once.
    slots: u32 = shared.defaults.parallel,
};

/// A prompt checked against the model: its token count, and its text for `echo`.
const Prompt = struct {
    input: Input,
    tokens: u32,
    text: []const u8,
};

/// One choice as it generates.
fn Choice(comptime Backend: type) type {
    return struct {
        backend: Backend,
        gen: generation.Generation,
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
    diag: *Diagnostic,
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
        defer info.deinit();
        const tokens = info.value.promptTokens() orelse {
            log.err("get_output(1) gave no input_tokens", .{});
            return backendError(diag, "read the token count");
        };
        build = build orelse info.value.llama_build_number;
        if (tokens >= cfg.ctx_size)
            return diag.set(400, "prompt", "context_length_exceeded", "This model's maximum context length is {d} tokens, and your prompt has {d}. Shorten the prompt.", .{ cfg.ctx_size, tokens });
        const text = switch (input) {
            .text => |t| t,
            .tokens => if (req.echo) backend.output(arena, 3, 1024) catch return backendError(diag, "read the prompt's text") else "",
        };
        prompt.* = .{ .input = input, .tokens = tokens, .text = text };
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

fn setPrompt(backend: anytype, input: Input, ctx_size: u32, diag: *Diagnostic) !void {
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

        fn envelope(self: Self) chat_response.Envelope {
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
                    .gen = generation.Generation.init(self.allocator, self.req.stop, @min(self.req.max_tokens, room)),
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
                const entry = try response.parseTokenLogprob(self.arena, json, choice.offset) orelse {
                    log.err("get_output_single(2) is not a token's logprobs: {s}", .{json});
                    return error.BackendFailed;
                };
                choice.offset += entry.n_bytes;
                try choice.logprobs.append(entry.entry);
            }
            try choice.text.appendSlice(text);
            return text;
        }

        fn whole(self: Self, contexts: []Backend, prompts: []const Prompt, diag: *Diagnostic) !void {
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
            try response.appendEnvelope(w, self.envelope());
            try w.writeAll(",\"choices\":[");
            for (all, 0..) |*choice, i| {
                if (i > 0) try w.writeByte(',');
                try response.appendChoice(w, choice.index, choice.text.items, if (self.req.logprobs != null) choice.logprobs.items else null, choice.gen.finish_reason);
            }
            try w.writeAll("],");
            try response.appendUsage(w, prompt_tokens, completion_tokens);
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
                try response.appendEnvelope(w, self.envelope());
                try w.writeAll(",\"choices\":[],");
                try response.appendUsage(w, prompt_tokens, completion_tokens);
                try w.writeAll("}\n\n");
                try write(self.out, event.items);
            }
            try write(self.out, chat_response.done_event);
        }

        /// One `data: {text_completion}` event for one choice, with the
        /// logprobs entries not sent yet.
        fn sendChunk(self: Self, event: *std.ArrayList(u8), choice: *C, text: []const u8, finish: ?Finish) !void {
            event.clearRetainingCapacity();
            const w = event.writer();
            try w.writeAll("data: ");
            try response.appendEnvelope(w, self.envelope());
            try w.writeAll(",\"choices\":[");
            const pending = if (self.req.logprobs != null) choice.logprobs.items[choice.logprobs_sent..] else null;
            try response.appendChoice(w, choice.index, text, pending, finish);
            choice.logprobs_sent = choice.logprobs.items.len;
            try w.writeAll("]}\n\n");
            try write(self.out, event.items);
        }

        fn streamError(self: Self, event: *std.ArrayList(u8), err: anyerror) !void {
            if (err == error.ClientGone) return error.ClientGone;
            var diag = Diagnostic{};
            generationError(err, &diag) catch {};
            event.clearRetainingCapacity();
            try event.appendSlice("data: ");
            try shared.api_error.appendError(event, diag.err);
            try event.appendSlice("\n\n");
            try write(self.out, event.items);
            try write(self.out, chat_response.done_event);
        }
    };
}

fn write(out: anytype, bytes: []const u8) error{ClientGone}!void {
    out.writeAll(bytes) catch return error.ClientGone;
}

fn generationError(err: anyerror, diag: *Diagnostic) error{ InvalidRequest, ClientGone, OutOfMemory } {
    return switch (err) {
        error.ClientGone => error.ClientGone,
        error.OutOfMemory => error.OutOfMemory,
        else => diag.setServerError("The model failed while generating; the server log has the details.", .{}),
    };
}

fn backendError(diag: *Diagnostic, what: []const u8) error{InvalidRequest} {
    return diag.setServerError("The model backend could not {s}; the server log has the details.", .{what});
}
