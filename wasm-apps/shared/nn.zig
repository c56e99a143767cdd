//! Bindings to the host: `wasi_ephemeral_nn` (WasmEdge's GGML ABI) and the
//! `llamaedge.chat_template` import, wrapped as `Backend`, the interface that
//! every app's logic drives. Every host error code becomes a Zig error here,
//! once, with a log line naming the call and the code, and what the host says
//! of a context (`get_output(ctx, 1)`) is parsed here, once, into `Info`.
//! The lowest layer: it imports nothing of the apps.

const std = @import("std");
const builtin = @import("builtin");

const log = std.log.scoped(.nn);

/// The host's imports. Off wasm (native `zig test`) they do not exist; the
/// stand-ins report "unsupported operation" so that code paths still compile.
const host = if (builtin.target.cpu.arch.isWasm()) struct {
    extern "wasi_ephemeral_nn" fn load_by_name(name_ptr: [*]const u8, name_len: u32, out_graph: *u32) u32;
    extern "wasi_ephemeral_nn" fn load_by_name_with_config(name_ptr: [*]const u8, name_len: u32, config_ptr: [*]const u8, config_len: u32, out_graph: *u32) u32;
    extern "wasi_ephemeral_nn" fn compute(ctx: u32) u32;
    extern "wasi_ephemeral_nn" fn init_execution_context(graph: u32, out_ctx: *u32) u32;
    extern "wasi_ephemeral_nn" fn set_input(ctx: u32, index: u32, tensor: *const Tensor) u32;
    extern "wasi_ephemeral_nn" fn get_output(ctx: u32, index: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32) u32;
    extern "wasi_ephemeral_nn" fn compute_single(ctx: u32) u32;
    extern "wasi_ephemeral_nn" fn get_output_single(ctx: u32, index: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32) u32;
    extern "wasi_ephemeral_nn" fn fini_single(ctx: u32) u32;
    extern "llamaedge" fn chat_template(graph: u32, messages_ptr: [*]const u8, messages_len: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32) u32;
} else struct {
    const unsupported: u32 = 6;
    fn load_by_name(_: [*]const u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
    fn load_by_name_with_config(_: [*]const u8, _: u32, _: [*]const u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
    fn compute(_: u32) u32 {
        return unsupported;
    }
    fn init_execution_context(_: u32, _: *u32) u32 {
        return unsupported;
    }
    fn set_input(_: u32, _: u32, _: *const Tensor) u32 {
        return unsupported;
    }
    fn get_output(_: u32, _: u32, _: [*]u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
    fn compute_single(_: u32) u32 {
        return unsupported;
    }
    fn get_output_single(_: u32, _: u32, _: [*]u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
    fn fini_single(_: u32) u32 {
        return unsupported;
    }
    fn chat_template(_: u32, _: [*]const u8, _: u32, _: [*]u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
};

/// The 20-byte tensor the legacy WASI-NN ABI passes to set_input.
const Tensor = extern struct {
    dims_ptr: [*]const u32,
    dims_len: u32,
    kind: u32,
    data_ptr: [*]const u8,
    data_len: u32,
};

const tensor_u8: u32 = 3; // the GGML backend ignores the type

/// WASI-NN error codes (and WasmEdge's LLM extensions).
pub const Code = enum(u32) {
    success = 0,
    invalid_argument = 1,
    invalid_encoding = 2,
    missing_memory = 3,
    busy = 4,
    runtime_error = 5,
    unsupported_operation = 6,
    too_large = 7,
    not_found = 8,
    end_of_sequence = 100,
    context_full = 101,
    prompt_too_long = 102,
    model_not_found = 103,
    _,
};

pub const Error = error{
    /// 102: the prompt does not fit in the context.
    PromptTooLong,
    /// 8 from chat_template: the model carries no chat template.
    NoTemplate,
    /// 5 from chat_template: the template raised an error.
    TemplateFailed,
    /// 103 / 8 from load_by_name: no model under that name.
    ModelNotFound,
    /// 1 from set_input: the host refused the input (a token id the model does
    /// not have, an empty input, a bad logit-bias entry).
    InvalidInput,
    /// Any other failure; the log line says which call and code.
    BackendFailed,
};

/// Why the host ended a generation.
pub const End = enum {
    /// The model ended (or the host stopped at n-predict and says "stop").
    stop,
    /// A limit was reached: the context is full, or the host says "length".
    length,
};

/// One step of generation.
pub const Step = union(enum) {
    /// The bytes of one token (possibly part of a UTF-8 character).
    token: []const u8,
    end: End,
};

/// What the host says of a context (`get_output(ctx, 1)`), with the host's
/// names: after set_input, the prompt's tokens; after generation, how it
/// ended and what it reused from its KV cache; in embedding mode, the
/// vectors' size and each input's tokens. A field the host leaves out keeps
/// its default here.
pub const Info = struct {
    input_tokens: ?i64 = null,
    output_tokens: i64 = 0,
    cached_tokens: i64 = 0,
    /// "stop" or "length" once the sequence ended.
    finish_reason: ?[]const u8 = null,
    /// The host's llama.cpp build; 0 when it does not know it.
    llama_build_number: ?i64 = null,
    n_embedding: ?i64 = null,
    input_tokens_each: ?[]const i64 = null,
    /// Speculative decoding: drafted tokens the model checked, and those it kept.
    draft_n: i64 = 0,
    draft_n_accepted: i64 = 0,
    /// Milliseconds from the prompt's submission to the first token, and from
    /// the first token to the last (our host's; 0 from a host that does not say).
    prompt_ms: f64 = 0,
    predicted_ms: f64 = 0,

    /// The prompt's tokens; null when the host did not say.
    pub fn promptTokens(self: Info) ?u32 {
        const n = self.input_tokens orelse return null;
        return @intCast(std.math.clamp(n, 0, std.math.maxInt(u32)));
    }

    /// Prompt tokens reused from the KV cache; 0 when the host does not say.
    pub fn cachedTokens(self: Info) u32 {
        const n = self.cached_tokens;
        return if (n >= 0 and n <= std.math.maxInt(u32)) @intCast(n) else 0;
    }

    /// llama-server's `timings` of the sequence, from what the host says.
    pub fn timings(self: Info) Timings {
        return .{
            .prompt_n = (self.promptTokens() orelse 0) -| self.cachedTokens(),
            .prompt_ms = self.prompt_ms,
            .predicted_n = count(self.output_tokens),
            .predicted_ms = self.predicted_ms,
            .draft_n = count(self.draft_n),
            .draft_n_accepted = count(self.draft_n_accepted),
        };
    }

    fn count(n: i64) u32 {
        return @intCast(std.math.clamp(n, 0, std.math.maxInt(u32)));
    }

    /// How the sequence ended: `length` when the host says so, else `stop`.
    pub fn end(self: Info) End {
        const reason = self.finish_reason orelse return .stop;
        return if (std.mem.eql(u8, reason, "length")) .length else .stop;
    }
};

/// What llama-server's responses carry as `timings`: the prompt tokens read
/// (those found in the KV cache left out) and the milliseconds to the first
/// token, the tokens generated and the milliseconds from the first to the
/// last, and with speculative decoding the drafted tokens and those kept.
pub const Timings = struct {
    prompt_n: u32 = 0,
    prompt_ms: f64 = 0,
    predicted_n: u32 = 0,
    predicted_ms: f64 = 0,
    draft_n: u32 = 0,
    draft_n_accepted: u32 = 0,
};

/// `get_output(ctx, 1)`'s JSON as `Info`; the strings are copied, so `json`
/// may go. Anything else than the host's object is the host's failure.
pub fn parseInfo(allocator: std.mem.Allocator, json: []const u8) (Error || std.mem.Allocator.Error)!std.json.Parsed(Info) {
    return std.json.parseFromSlice(Info, allocator, json, .{ .ignore_unknown_fields = true, .allocate = .alloc_always }) catch |err| switch (err) {
        error.OutOfMemory => error.OutOfMemory,
        else => error.BackendFailed,
    };
}

fn check(call: []const u8, code: u32) Error!void {
    switch (@as(Code, @enumFromInt(code))) {
        .success => {},
        .prompt_too_long => return error.PromptTooLong,
        else => |c| {
            log.err("{s} failed with WASI-NN code {d} ({s})", .{ call, code, codeName(c) });
            return error.BackendFailed;
        },
    }
}

fn codeName(code: Code) []const u8 {
    return std.enums.tagName(Code, code) orelse "unknown";
}

pub const Backend = struct {
    graph: u32,
    ctx: u32,
    token_buf: [1024]u8 = undefined,
    /// What the host said at the end of the sequence (read for its finish
    /// reason), so that `cachedTokens` and `timings` need not ask again.
    at_end: ?AtEnd = null,

    const AtEnd = struct { end: End, cached_tokens: u32, timings: Timings };

    /// `load_by_name(name)` and a fresh execution context for this request.
    pub fn open(name: []const u8) Error!Backend {
        var graph: u32 = 0;
        try checkLoad("load_by_name", host.load_by_name(name.ptr, @intCast(name.len), &graph));
        return withContext(graph);
    }

    /// `load_by_name_with_config(name, config)` (e.g. `{"embedding":true}`)
    /// and a fresh execution context.
    pub fn openWithConfig(name: []const u8, config: []const u8) Error!Backend {
        var graph: u32 = 0;
        try checkLoad("load_by_name_with_config", host.load_by_name_with_config(name.ptr, @intCast(name.len), config.ptr, @intCast(config.len), &graph));
        return withContext(graph);
    }

    /// Another execution context on the same graph: one per choice when a
    /// request asks for several, which the host decodes together.
    pub fn fork(self: *const Backend) Error!Backend {
        return withContext(self.graph);
    }

    fn withContext(graph: u32) Error!Backend {
        var ctx: u32 = 0;
        try check("init_execution_context", host.init_execution_context(graph, &ctx));
        return .{ .graph = graph, .ctx = ctx };
    }

    /// Renders the model's own chat template (`llamaedge.chat_template`).
    /// `request_json` is `{"messages":[...],"add_generation_prompt":true}`.
    /// Caller owns the returned prompt.
    pub fn renderTemplate(self: *Backend, allocator: std.mem.Allocator, request_json: []const u8) ![]u8 {
        return renderWithTemplate(allocator, self.graph, request_json);
    }

    pub fn setMetadata(self: *Backend, json: []const u8) Error!void {
        try checkInput("set_input(metadata)", setBytes(self.ctx, 1, json));
    }

    /// Sets (and so tokenizes) the prompt.
    pub fn setPrompt(self: *Backend, prompt: []const u8) Error!void {
        self.at_end = null; // a new sequence
        try check("set_input(prompt)", setBytes(self.ctx, 0, prompt));
    }

    /// The prompt as token ids (set_input index 2), used as they are: no
    /// tokenization, no BOS added.
    pub fn setPromptTokens(self: *Backend, tokens: []const u32) Error!void {
        comptime std.debug.assert(builtin.target.cpu.arch.endian() == .little); // the ABI's byte order
        self.at_end = null; // a new sequence
        try checkInput("set_input(prompt tokens)", setBytes(self.ctx, 2, std.mem.sliceAsBytes(tokens)));
    }

    /// Embedding mode: a batch of inputs (set_input index 3), a JSON array of
    /// strings and token-id arrays.
    pub fn setBatch(self: *Backend, json: []const u8) Error!void {
        try checkInput("set_input(batch)", setBytes(self.ctx, 3, json));
    }

    /// Runs the whole computation (embedding mode: embeds the inputs).
    pub fn compute(self: *Backend) Error!void {
        try check("compute", host.compute(self.ctx));
    }

    /// `get_output(ctx, 1)`, parsed: what the host says of this context now.
    /// Caller deinits it.
    pub fn info(self: *Backend, allocator: std.mem.Allocator) !std.json.Parsed(Info) {
        const json = try self.output(allocator, 1, 1024);
        defer allocator.free(json);
        return parseInfo(allocator, json) catch |err| {
            if (err == error.BackendFailed) log.err("get_output(1) is not the host's info: {s}", .{json});
            return err;
        };
    }

    /// What `info` says at the end of a sequence, read without an allocator;
    /// null when the host does not answer.
    fn infoAtEnd(self: *Backend) ?AtEnd {
        // Room for the JSON of a generating context and its parse (the
        // fields are numbers and one short string), which live only here.
        var scratch: [16 << 10]u8 = undefined;
        var fba = std.heap.FixedBufferAllocator.init(&scratch);
        const parsed = self.info(fba.allocator()) catch return null;
        return .{ .end = parsed.value.end(), .cached_tokens = parsed.value.cachedTokens(), .timings = parsed.value.timings() };
    }

    /// `get_output(ctx, index)`, whatever its size (`size_hint`: the bytes
    /// expected, to get it in one call): 2 in embedding mode is the raw
    /// little-endian float32 vectors, 3 the prompt's text. Caller owns it.
    pub fn output(self: *Backend, allocator: std.mem.Allocator, index: u32, size_hint: usize) ![]u8 {
        return outputOf(allocator, self.ctx, index, size_hint, host.get_output);
    }

    /// `get_output_single(ctx, 2)`: the JSON of the token just sampled, with
    /// its log-probability and the top alternatives (metadata `logprobs`).
    pub fn tokenLogprobs(self: *Backend, allocator: std.mem.Allocator) ![]u8 {
        return outputOf(allocator, self.ctx, 2, 1024, host.get_output_single);
    }

    /// Generates one token. The token's bytes stay valid until the next call.
    pub fn next(self: *Backend) Error!Step {
        const code = host.compute_single(self.ctx);
        switch (@as(Code, @enumFromInt(code))) {
            .success => {},
            .end_of_sequence => return .{ .end = self.reportedFinish() },
            .context_full => return .{ .end = .length },
            .runtime_error => {
                // Also how the host says that the client disconnected.
                log.info("compute_single returned 5: the request was cancelled or generation failed", .{});
                return error.BackendFailed;
            },
            else => try check("compute_single", code),
        }
        var written: u32 = 0;
        try check("get_output_single", host.get_output_single(self.ctx, 0, &self.token_buf, self.token_buf.len, &written));
        if (written > self.token_buf.len) return error.BackendFailed;
        return .{ .token = self.token_buf[0..written] };
    }

    /// After end of sequence, the host says whether the model ended (stop) or
    /// a limit was reached (length); "stop" when it does not say.
    fn reportedFinish(self: *Backend) End {
        const now = self.infoAtEnd() orelse return .stop;
        self.at_end = now;
        return now.end;
    }

    /// Prompt tokens the host reused from its KV cache (`cached_tokens` of
    /// get_output(1)); 0 when it does not say. Read before `finish`.
    pub fn cachedTokens(self: *Backend) u32 {
        const now = self.at_end orelse self.infoAtEnd() orelse return 0;
        return now.cached_tokens;
    }

    /// The sequence's timings (get_output(1)); null when the host does not
    /// answer. Read before `finish`.
    pub fn timings(self: *Backend) ?Timings {
        const now = self.at_end orelse self.infoAtEnd() orelse return null;
        return now.timings;
    }

    pub fn finish(self: *Backend) void {
        _ = host.fini_single(self.ctx);
    }
};

fn checkLoad(call: []const u8, code: u32) Error!void {
    switch (@as(Code, @enumFromInt(code))) {
        .model_not_found, .not_found => return error.ModelNotFound,
        else => try check(call, code),
    }
}

/// As `check`, with 1 (invalid argument) being the client's input.
fn checkInput(call: []const u8, code: u32) Error!void {
    if (code == @intFromEnum(Code.invalid_argument)) {
        log.info("{s} refused the input (WASI-NN code 1)", .{call});
        return error.InvalidInput;
    }
    try check(call, code);
}

/// An output of any size: the host says how large it is when the buffer is
/// too small, and the buffer grows once.
fn outputOf(allocator: std.mem.Allocator, ctx: u32, index: u32, size_hint: usize, comptime get: anytype) ![]u8 {
    var buf = try allocator.alloc(u8, @max(size_hint, 1));
    errdefer allocator.free(buf);
    var written: u32 = 0;
    var code = get(ctx, index, buf.ptr, @intCast(buf.len), &written);
    if (code == @intFromEnum(Code.too_large) and written > buf.len) {
        buf = try allocator.realloc(buf, written);
        code = get(ctx, index, buf.ptr, @intCast(buf.len), &written);
    }
    var name_buf: [32]u8 = undefined;
    try check(std.fmt.bufPrint(&name_buf, "get_output({d})", .{index}) catch "get_output", code);
    if (written > buf.len) return error.BackendFailed;
    return allocator.realloc(buf, written);
}

fn setBytes(ctx: u32, index: u32, bytes: []const u8) u32 {
    const dims = [_]u32{1};
    const tensor = Tensor{ .dims_ptr = &dims, .dims_len = 1, .kind = tensor_u8, .data_ptr = bytes.ptr, .data_len = @intCast(bytes.len) };
    return host.set_input(ctx, index, &tensor);
}

/// `llamaedge.chat_template` on graph `graph`, growing the buffer once when
/// the host says the prompt does not fit.
pub fn renderWithTemplate(allocator: std.mem.Allocator, graph: u32, request_json: []const u8) ![]u8 {
    var buf = try allocator.alloc(u8, request_json.len + 4096);
    errdefer allocator.free(buf);
    var written: u32 = 0;
    var code = host.chat_template(graph, request_json.ptr, @intCast(request_json.len), buf.ptr, @intCast(buf.len), &written);
    if (code == @intFromEnum(Code.too_large) and written > buf.len) {
        buf = try allocator.realloc(buf, written);
        code = host.chat_template(graph, request_json.ptr, @intCast(request_json.len), buf.ptr, @intCast(buf.len), &written);
    }
    switch (@as(Code, @enumFromInt(code))) {
        .success => {},
        .not_found => return error.NoTemplate,
        .runtime_error => return error.TemplateFailed,
        else => try check("chat_template", code),
    }
    if (written > buf.len) return error.BackendFailed;
    return allocator.realloc(buf, written);
}

test "host codes map to errors" {
    try check("x", 0);
    try std.testing.expectError(error.PromptTooLong, check("x", 102));
    try std.testing.expectEqualStrings("context_full", codeName(.context_full));
    try std.testing.expectEqualStrings("unknown", codeName(@enumFromInt(42)));
}

/// `json` parsed as `Info`, for the tests.
fn testInfo(json: []const u8) !Info {
    const parsed = try parseInfo(std.testing.allocator, json);
    defer parsed.deinit();
    var info = parsed.value;
    info.finish_reason = null; // owned by `parsed`
    info.input_tokens_each = null;
    return info;
}

test "finish reason from the host's info" {
    const length = try parseInfo(std.testing.allocator, "{\"input_tokens\": 3, \"finish_reason\": \"length\", \"llama_commit\": \"x\"}");
    defer length.deinit();
    try std.testing.expectEqual(End.length, length.value.end());
    const stop = try parseInfo(std.testing.allocator, "{\"finish_reason\":\"stop\"}");
    defer stop.deinit();
    try std.testing.expectEqual(End.stop, stop.value.end());
    try std.testing.expectEqual(End.stop, (try testInfo("{\"input_tokens\":3,\"finish_reason\":null}")).end());
    try std.testing.expectError(error.BackendFailed, parseInfo(std.testing.allocator, "garbage"));
}

test "cached and prompt tokens from the host's info" {
    try std.testing.expectEqual(@as(u32, 12), (try testInfo("{\"input_tokens\":30,\"cached_tokens\":12}")).cachedTokens());
    try std.testing.expectEqual(@as(u32, 0), (try testInfo("{\"input_tokens\":30}")).cachedTokens());
    try std.testing.expectEqual(@as(u32, 0), (try testInfo("{\"cached_tokens\":-3}")).cachedTokens());
    try std.testing.expectEqual(@as(?u32, 30), (try testInfo("{\"input_tokens\":30,\"llama_build_number\":7}")).promptTokens());
    try std.testing.expectEqual(@as(?u32, 0), (try testInfo("{\"input_tokens\":-1}")).promptTokens());
    try std.testing.expectEqual(@as(?u32, null), (try testInfo("{\"output_tokens\":2}")).promptTokens());
    const each = try parseInfo(std.testing.allocator, "{\"n_embedding\":4,\"input_tokens_each\":[1,2]}");
    defer each.deinit();
    try std.testing.expectEqualSlices(i64, &.{ 1, 2 }, each.value.input_tokens_each.?);
}

test "timings from the host's info: the prompt less the cache, the draft counts, the times" {
    const t = (try testInfo("{\"input_tokens\":30,\"cached_tokens\":12,\"output_tokens\":9,\"draft_n\":6,\"draft_n_accepted\":4,\"prompt_ms\":12.5,\"predicted_ms\":80}")).timings();
    try std.testing.expectEqual(Timings{ .prompt_n = 18, .prompt_ms = 12.5, .predicted_n = 9, .predicted_ms = 80, .draft_n = 6, .draft_n_accepted = 4 }, t);
    // A host that says none of it (WasmEdge's): zeros.
    try std.testing.expectEqual(Timings{ .prompt_n = 30 }, (try testInfo("{\"input_tokens\":30}")).timings());
}

test "the tensor has the 20-byte wasm32 layout" {
    if (@sizeOf(usize) == 4) try std.testing.expectEqual(@as(usize, 20), @sizeOf(Tensor));
}
