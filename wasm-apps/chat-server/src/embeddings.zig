//! POST /v1/embeddings: the request checked into an `EmbeddingRequest`, all
//! inputs embedded by the host in one batch (set_input index 3, compute), and
//! the vectors written from the host's raw float32 output (get_output index 2)
//! as JSON numbers or base64.
//!
//! Also the parsing that /v1/completions shares: a JSON object body, and the
//! four shapes OpenAI accepts for text (a string, strings, a token array,
//! token arrays).
//!
//! `backend` is anything with setMetadata, setBatch, compute, output and info
//! (nn.Backend, or the fake in the tests below).

const std = @import("std");
const openai = @import("openai.zig");

const log = std.log.scoped(.embeddings);
const Value = std.json.Value;

/// OpenAI's limit on the items of `input` (and what we take for `prompt`).
pub const max_inputs = 2048;

/// One text to embed or complete: text, or token ids used as they are.
pub const Input = union(enum) {
    text: []const u8,
    tokens: []const u32,
};

/// `param` as a string, a list of strings, a token array or a list of token
/// arrays. Empty strings, empty lists and more than `max_inputs` items are
/// refused: there is nothing to compute from them.
pub fn parseInputs(arena: std.mem.Allocator, value: ?Value, param: []const u8, diag: *openai.Diagnostic) ![]Input {
    const expected = "a string, an array of strings, an array of token ids or an array of token-id arrays";
    const v = value orelse return diag.set(400, param, null, "Missing required parameter: '{s}'.", .{param});
    switch (v) {
        .string => |s| {
            if (s.len == 0) return diag.set(400, param, null, "'{s}' must not be an empty string.", .{param});
            const one = try arena.alloc(Input, 1);
            one[0] = .{ .text = s };
            return one;
        },
        .array => |list| {
            const items = list.items;
            if (items.len == 0) return diag.set(400, param, null, "'{s}' must not be an empty array.", .{param});
            if (items[0] == .integer) {
                const one = try arena.alloc(Input, 1);
                one[0] = .{ .tokens = try parseTokens(arena, items, param, diag) };
                return one;
            }
            if (items.len > max_inputs)
                return diag.set(400, param, null, "'{s}' takes at most {d} items, not {d}.", .{ param, max_inputs, items.len });
            const inputs = try arena.alloc(Input, items.len);
            var param_buf: [64]u8 = undefined;
            for (items, 0..) |item, i| {
                const at = std.fmt.bufPrint(&param_buf, "{s}[{d}]", .{ param, i }) catch param;
                inputs[i] = switch (item) {
                    .string => |s| if (s.len == 0)
                        return diag.set(400, at, null, "'{s}' must not be an empty string.", .{at})
                    else
                        .{ .text = s },
                    .array => |tokens| if (tokens.items.len == 0)
                        return diag.set(400, at, null, "'{s}' must not be an empty array.", .{at})
                    else
                        .{ .tokens = try parseTokens(arena, tokens.items, at, diag) },
                    else => return openai.typeError(diag, at, "a string or an array of token ids", item),
                };
                // One kind per request, as OpenAI's schema has it.
                if (std.meta.activeTag(inputs[i]) != std.meta.activeTag(inputs[0]))
                    return diag.set(400, at, null, "'{s}' mixes strings and token arrays; send {s}.", .{ param, expected });
            }
            return inputs;
        },
        else => return openai.typeError(diag, param, expected, v),
    }
}

fn parseTokens(arena: std.mem.Allocator, items: []const Value, param: []const u8, diag: *openai.Diagnostic) ![]u32 {
    const tokens = try arena.alloc(u32, items.len);
    for (items, 0..) |item, i| {
        if (item != .integer or item.integer < 0 or item.integer > std.math.maxInt(i32))
            return diag.set(400, param, null, "Invalid token id in '{s}' at position {d}: token ids are integers from 0.", .{ param, i });
        tokens[i] = @intCast(item.integer);
    }
    return tokens;
}

/// A JSON array of the inputs, the shape of set_input index 3.
pub fn appendBatch(out: *std.ArrayList(u8), inputs: []const Input) !void {
    const w = out.writer();
    try w.writeByte('[');
    for (inputs, 0..) |input, i| {
        if (i > 0) try w.writeByte(',');
        try appendInput(w, input);
    }
    try w.writeByte(']');
}

fn appendInput(w: anytype, input: Input) !void {
    switch (input) {
        .text => |t| try std.json.encodeJsonString(t, .{}, w),
        .tokens => |tokens| {
            try w.writeByte('[');
            for (tokens, 0..) |t, j| {
                if (j > 0) try w.writeByte(',');
                try w.print("{d}", .{t});
            }
            try w.writeByte(']');
        },
    }
}

// ---------------------------------------------------------------------------
// The request

pub const Encoding = enum { float, base64 };

pub const EmbeddingRequest = struct {
    arena: std.heap.ArenaAllocator,
    model: ?[]const u8 = null,
    inputs: []Input = &.{},
    encoding: Encoding = .float,
    /// Keep the first `dimensions` values, then normalize again.
    dimensions: ?u32 = null,

    pub fn deinit(self: *EmbeddingRequest) void {
        self.arena.deinit();
    }
};

/// Parses and checks an embeddings request. Fields this server does not know
/// are ignored, as on the chat route; `user` is accepted.
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, diag: *openai.Diagnostic) !EmbeddingRequest {
    var req = EmbeddingRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();
    const obj = try openai.parseObject(arena, body, diag);

    req.model = try openai.optString(obj, "model", diag);
    req.inputs = try parseInputs(arena, obj.get("input"), "input", diag);
    if (try openai.optString(obj, "encoding_format", diag)) |format| {
        req.encoding = std.meta.stringToEnum(Encoding, format) orelse
            return diag.set(400, "encoding_format", null, "Invalid value for 'encoding_format': '{s}'. Supported values are: 'float' and 'base64'.", .{format});
    }
    req.dimensions = try openai.optCount(obj, "dimensions", diag);
    _ = try openai.optString(obj, "user", diag);
    return req;
}

// ---------------------------------------------------------------------------
// Embedding

pub const Config = struct {
    /// The model id the response names.
    model_id: []const u8,
};

/// Embeds the request's inputs and writes the response. error.InvalidRequest
/// (with `diag` set) comes before anything was written. error.ClientGone:
/// the write failed.
pub fn embed(allocator: std.mem.Allocator, backend: anytype, out: anytype, req: *const EmbeddingRequest, cfg: Config, diag: *openai.Diagnostic) !void {
    backend.setMetadata("{\"embedding\":true}") catch return backendError(diag, "switch to embedding mode");
    var batch = std.ArrayList(u8).init(allocator);
    defer batch.deinit();
    try appendBatch(&batch, req.inputs);
    backend.setBatch(batch.items) catch |err| return inputError(err, diag, "set the inputs");
    backend.compute() catch |err| return inputError(err, diag, "compute the embeddings");

    const info = backend.info(allocator) catch return backendError(diag, "read the token counts");
    defer allocator.free(info);
    const counts = readCounts(allocator, info);
    const raw = backend.output(allocator, 2, req.inputs.len * counts.n_embedding * 4) catch return backendError(diag, "read the embeddings");
    defer allocator.free(raw);

    const n_inputs = req.inputs.len;
    if (raw.len == 0 or raw.len % (4 * n_inputs) != 0) {
        log.err("get_output(2) gave {d} bytes for {d} inputs: not whole float32 vectors", .{ raw.len, n_inputs });
        return backendError(diag, "read the embeddings");
    }
    const n_embd = raw.len / 4 / n_inputs;
    const dims = req.dimensions orelse n_embd;
    if (dims > n_embd)
        return diag.set(400, "dimensions", null, "'dimensions' is {d}, but the model's embeddings have {d} dimensions. Ask for at most {d}.", .{ dims, n_embd, n_embd });

    // Every value is checked before the response begins: after that, there is no
    // answering with an error.
    for (0..raw.len / 4) |j| {
        const x: f32 = @bitCast(std.mem.readInt(u32, raw[j * 4 ..][0..4], .little));
        if (!std.math.isFinite(x)) {
            log.err("the embedding of input {d} holds a value that is not finite", .{j / n_embd});
            return backendError(diag, "compute the embeddings");
        }
    }

    const vector = try allocator.alloc(f32, dims);
    defer allocator.free(vector);
    var body = std.ArrayList(u8).init(allocator);
    defer body.deinit();
    const w = body.writer();
    try w.writeAll("Status: 200 OK\nContent-Type: application/json\n\n{\"object\":\"list\",\"data\":[");
    for (0..n_inputs) |i| {
        readVector(raw[i * n_embd * 4 ..][0 .. dims * 4], vector);
        if (dims < n_embd) normalize(vector);
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"object\":\"embedding\",\"index\":{d},\"embedding\":", .{i});
        switch (req.encoding) {
            .float => try appendFloats(w, vector),
            .base64 => try appendBase64(w, vector),
        }
        try w.writeByte('}');
        // Written as it grows: a large batch is megabytes of JSON, and each write
        // is a host call, which the host's time limit between calls asks for.
        if (body.items.len >= flush_bytes) {
            out.writeAll(body.items) catch return error.ClientGone;
            body.clearRetainingCapacity();
        }
    }
    const tokens = counts.prompt_tokens;
    try w.writeAll("],\"model\":");
    try std.json.encodeJsonString(cfg.model_id, .{}, w);
    try w.print(",\"usage\":{{\"prompt_tokens\":{d},\"total_tokens\":{d}}}}}", .{ tokens, tokens });
    out.writeAll(body.items) catch return error.ClientGone;
}

/// How much of the response is held before it is written.
const flush_bytes = 256 * 1024;

fn inputError(err: anyerror, diag: *openai.Diagnostic, what: []const u8) error{ InvalidRequest, OutOfMemory } {
    return switch (err) {
        error.PromptTooLong => diag.set(400, "input", "context_length_exceeded", "An input is longer than the embedding model's context. Shorten it or split it into several inputs.", .{}),
        error.InvalidInput => diag.set(400, "input", null, "The model refused an input: a token id it does not have, or an input with no tokens.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, what),
    };
}

fn backendError(diag: *openai.Diagnostic, what: []const u8) error{InvalidRequest} {
    return serverError(diag, "The model backend could not {s}; the server log has the details.", .{what});
}

/// A 500 of type `server_error`: the server failed, not the request.
pub fn serverError(diag: *openai.Diagnostic, comptime fmt: []const u8, args: anytype) error{InvalidRequest} {
    const err = diag.set(500, null, null, fmt, args);
    diag.err.kind = "server_error";
    return err;
}

const Counts = struct {
    /// 0 when the host does not say.
    n_embedding: usize = 0,
    prompt_tokens: u64 = 0,
};

/// From get_output(1): the vector size and the prompt tokens of all inputs
/// (`input_tokens_each`, else `input_tokens`).
fn readCounts(allocator: std.mem.Allocator, info: []const u8) Counts {
    var counts = Counts{};
    const parsed = std.json.parseFromSlice(Value, allocator, info, .{}) catch return counts;
    defer parsed.deinit();
    if (parsed.value != .object) return counts;
    const obj = parsed.value.object;
    if (obj.get("n_embedding")) |n| if (n == .integer and n.integer > 0 and n.integer < 1 << 20) {
        counts.n_embedding = @intCast(n.integer);
    };
    if (obj.get("input_tokens_each")) |each| if (each == .array) {
        for (each.array.items) |n| {
            if (n == .integer and n.integer > 0) counts.prompt_tokens += @intCast(n.integer);
        }
        return counts;
    };
    if (obj.get("input_tokens")) |n| if (n == .integer and n.integer > 0) {
        counts.prompt_tokens = @intCast(n.integer);
    };
    return counts;
}

fn readVector(bytes: []const u8, vector: []f32) void {
    for (vector, 0..) |*x, j| x.* = @bitCast(std.mem.readInt(u32, bytes[j * 4 ..][0..4], .little));
}

/// L2 normalization after truncation (`dimensions`), as Ollama does; the host
/// normalized the whole vector already.
fn normalize(vector: []f32) void {
    var sum: f64 = 0;
    for (vector) |x| sum += @as(f64, x) * @as(f64, x);
    if (sum == 0) return;
    const scale = 1 / @sqrt(sum);
    for (vector) |*x| x.* = @floatCast(@as(f64, x.*) * scale);
}

fn appendFloats(w: anytype, vector: []const f32) !void {
    try w.writeByte('[');
    for (vector, 0..) |x, j| {
        if (j > 0) try w.writeByte(',');
        try appendFloat(w, x);
    }
    try w.writeByte(']');
}

/// The shortest decimal that reads back as exactly this float32, also when a
/// client reads it as a float64 first (as JSON parsers do) and then narrows:
/// checked here, with the float64 value's digits when the shortest would not.
pub fn appendFloat(w: anytype, x: f32) !void {
    var buf: [64]u8 = undefined;
    const magnitude = @abs(x);
    const text = if (x == 0 or (magnitude >= 1e-5 and magnitude < 1e7))
        std.fmt.bufPrint(&buf, "{d}", .{x}) catch unreachable
    else
        std.fmt.bufPrint(&buf, "{e}", .{x}) catch unreachable;
    const back: f32 = @floatCast(std.fmt.parseFloat(f64, text) catch 0);
    if (back == x) return w.writeAll(text);
    try w.print("{e}", .{@as(f64, x)});
}

/// The raw little-endian float32 bytes in base64, which the openai SDK asks for
/// by default and decodes.
fn appendBase64(w: anytype, vector: []const f32) !void {
    const encoder = std.base64.standard.Encoder;
    var bytes: [4 * 3]u8 = undefined; // 3 floats = 12 bytes = 16 base64 characters, no padding
    var chars: [16]u8 = undefined;
    try w.writeByte('"');
    var j: usize = 0;
    while (j < vector.len) : (j += 3) {
        const n: usize = @min(3, vector.len - j);
        for (0..n) |k| std.mem.writeInt(u32, bytes[k * 4 ..][0..4], @bitCast(vector[j + k]), .little);
        try w.writeAll(encoder.encode(&chars, bytes[0 .. n * 4]));
    }
    try w.writeByte('"');
}

// ---------------------------------------------------------------------------

const testing = std.testing;
const support = @import("test_support.zig");

/// A scripted embedding backend: every input embeds to a vector of `n_embd`
/// values from its position and the input's length, normalized; it records
/// the batch it was given.
const FakeBackend = struct {
    allocator: std.mem.Allocator,
    n_embd: usize = 4,
    /// The host's answer to set_input(3).
    batch_error: ?@import("nn.zig").Error = null,
    metadata: std.ArrayListUnmanaged(u8) = .empty,
    batch: std.ArrayListUnmanaged(u8) = .empty,
    computed: bool = false,
    size_hint: usize = 0,

    fn deinit(self: *FakeBackend) void {
        self.metadata.deinit(self.allocator);
        self.batch.deinit(self.allocator);
    }

    const Error = @import("nn.zig").Error || std.mem.Allocator.Error;

    pub fn setMetadata(self: *FakeBackend, json: []const u8) Error!void {
        self.metadata.clearRetainingCapacity();
        try self.metadata.appendSlice(self.allocator, json);
    }

    pub fn setBatch(self: *FakeBackend, json: []const u8) Error!void {
        if (self.batch_error) |err| return err;
        self.batch.clearRetainingCapacity();
        try self.batch.appendSlice(self.allocator, json);
    }

    pub fn compute(self: *FakeBackend) Error!void {
        self.computed = true;
    }

    fn inputs(self: *FakeBackend, allocator: std.mem.Allocator) !std.json.Parsed(Value) {
        return std.json.parseFromSlice(Value, allocator, self.batch.items, .{});
    }

    pub fn output(self: *FakeBackend, allocator: std.mem.Allocator, index: u32, size_hint: usize) ![]u8 {
        std.debug.assert(index == 2);
        self.size_hint = size_hint;
        const parsed = try self.inputs(allocator);
        defer parsed.deinit();
        const items = parsed.value.array.items;
        const raw = try allocator.alloc(u8, items.len * self.n_embd * 4);
        const vector = try allocator.alloc(f32, self.n_embd);
        defer allocator.free(vector);
        for (items, 0..) |item, i| {
            const len: f32 = @floatFromInt(if (item == .string) item.string.len else item.array.items.len);
            for (vector, 0..) |*x, j| x.* = len + @as(f32, @floatFromInt(j)) * 0.1;
            normalize(vector);
            for (vector, 0..) |x, j| std.mem.writeInt(u32, raw[(i * self.n_embd + j) * 4 ..][0..4], @bitCast(x), .little);
        }
        return raw;
    }

    pub fn info(self: *FakeBackend, allocator: std.mem.Allocator) ![]u8 {
        const parsed = try self.inputs(allocator);
        defer parsed.deinit();
        var out = std.ArrayList(u8).init(allocator);
        errdefer out.deinit();
        try out.writer().print("{{\"n_embedding\":{d},\"input_tokens_each\":[", .{self.n_embd});
        for (parsed.value.array.items, 0..) |item, i| {
            if (i > 0) try out.append(',');
            try out.writer().print("{d}", .{if (item == .string) item.string.len else item.array.items.len});
        }
        try out.appendSlice("]}");
        return out.toOwnedSlice();
    }
};

const Run = support.Run;

fn run(backend: *FakeBackend, body: []const u8) !Run {
    var r = Run.init();
    errdefer r.deinit();
    var parse_diag = openai.Diagnostic{};
    var req = try parseRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    r.result = embed(testing.allocator, backend, r.out.writer(), &req, .{ .model_id = "tiny" }, &r.diag);
    return r;
}

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    try support.expectInvalid(parseRequest, body, 400, param, message_part);
}

test "input takes the four shapes" {
    var diag = openai.Diagnostic{};
    {
        var req = try parseRequest(testing.allocator, "{\"input\":\"hi\",\"model\":\"m\",\"user\":\"u\",\"encoding_format\":\"base64\",\"dimensions\":2}", &diag);
        defer req.deinit();
        try testing.expectEqual(@as(usize, 1), req.inputs.len);
        try testing.expectEqualStrings("hi", req.inputs[0].text);
        try testing.expectEqual(Encoding.base64, req.encoding);
        try testing.expectEqual(@as(?u32, 2), req.dimensions);
        try testing.expectEqualStrings("m", req.model.?);
    }
    {
        var req = try parseRequest(testing.allocator, "{\"input\":[\"a\",\"b\"]}", &diag);
        defer req.deinit();
        try testing.expectEqual(@as(usize, 2), req.inputs.len);
        try testing.expectEqual(Encoding.float, req.encoding);
    }
    {
        var req = try parseRequest(testing.allocator, "{\"input\":[1,2,3]}", &diag);
        defer req.deinit();
        try testing.expectEqual(@as(usize, 1), req.inputs.len);
        try testing.expectEqualSlices(u32, &.{ 1, 2, 3 }, req.inputs[0].tokens);
    }
    {
        var req = try parseRequest(testing.allocator, "{\"input\":[[1],[2,3]]}", &diag);
        defer req.deinit();
        try testing.expectEqual(@as(usize, 2), req.inputs.len);
        try testing.expectEqualSlices(u32, &.{ 2, 3 }, req.inputs[1].tokens);
    }
}

test "embedding requests the API refuses" {
    try expectInvalid("{}", "input", "Missing required parameter: 'input'");
    try expectInvalid("{\"input\":\"\"}", "input", "empty string");
    try expectInvalid("{\"input\":[]}", "input", "empty array");
    try expectInvalid("{\"input\":[\"a\",\"\"]}", "input[1]", "empty string");
    try expectInvalid("{\"input\":[[1],[]]}", "input[1]", "empty array");
    try expectInvalid("{\"input\":[\"a\",[1]]}", "input[1]", "mixes strings and token arrays");
    try expectInvalid("{\"input\":[1,-2]}", "input", "position 1");
    try expectInvalid("{\"input\":[1,\"a\"]}", "input", "position 1");
    try expectInvalid("{\"input\":5}", "input", "expected a string, an array of strings");
    try expectInvalid("{\"input\":[{}]}", "input[0]", "expected a string or an array of token ids");
    try expectInvalid("{\"input\":\"a\",\"encoding_format\":\"int8\"}", "encoding_format", "'float' and 'base64'");
    try expectInvalid("{\"input\":\"a\",\"dimensions\":0}", "dimensions", "at least 1");
    try expectInvalid("{\"input\":\"a\",\"model\":3}", "model", "expected a string");
    var many = std.ArrayList(u8).init(testing.allocator);
    defer many.deinit();
    try many.appendSlice("{\"input\":[\"x\"");
    for (0..max_inputs) |_| try many.appendSlice(",\"x\"");
    try many.appendSlice("]}");
    try expectInvalid(many.items, "input", "at most 2048 items, not 2049");
}

test "a batch goes to the host in one set_input and comes back in order" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var r = try run(&backend, "{\"input\":[\"a\",\"bbb\\\"\"]}");
    defer r.deinit();
    try r.result;
    try testing.expectEqualStrings("[\"a\",\"bbb\\\"\"]", backend.batch.items);
    try testing.expectEqualStrings("{\"embedding\":true}", backend.metadata.items);
    try testing.expect(std.mem.startsWith(u8, r.out.items, "Status: 200 OK\nContent-Type: application/json\n\n"));
    const parsed = try r.json();
    defer parsed.deinit();
    const root = parsed.value.object;
    try testing.expectEqualStrings("list", root.get("object").?.string);
    try testing.expectEqualStrings("tiny", root.get("model").?.string);
    const data = root.get("data").?.array.items;
    try testing.expectEqual(@as(usize, 2), data.len);
    for (data, 0..) |item, i| {
        try testing.expectEqualStrings("embedding", item.object.get("object").?.string);
        try testing.expectEqual(@as(i64, @intCast(i)), item.object.get("index").?.integer);
        try testing.expectEqual(@as(usize, 4), item.object.get("embedding").?.array.items.len);
    }
    const usage = root.get("usage").?.object;
    try testing.expectEqual(@as(i64, 5), usage.get("prompt_tokens").?.integer);
    try testing.expectEqual(@as(i64, 5), usage.get("total_tokens").?.integer);
    // the vectors' size is known from the metadata: one get_output call
    try testing.expectEqual(@as(usize, 2 * 4 * 4), backend.size_hint);
}

const CountingWriter = struct {
    out: *std.ArrayList(u8),
    writes: *usize,
    pub fn writeAll(self: CountingWriter, bytes: []const u8) !void {
        self.writes.* += 1;
        try self.out.appendSlice(bytes);
    }
};

test "a large answer is written in pieces that join to one JSON body" {
    var backend = FakeBackend{ .allocator = testing.allocator, .n_embd = 1000 };
    defer backend.deinit();
    var body = std.ArrayList(u8).init(testing.allocator);
    defer body.deinit();
    try body.appendSlice("{\"input\":[\"a\"");
    for (0..40) |_| try body.appendSlice(",\"bb\"");
    try body.appendSlice("]}");
    var diag = openai.Diagnostic{};
    var req = try parseRequest(testing.allocator, body.items, &diag);
    defer req.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    var writes: usize = 0;
    try embed(testing.allocator, &backend, CountingWriter{ .out = &out, .writes = &writes }, &req, .{ .model_id = "tiny" }, &diag);
    try testing.expect(writes > 1);
    const parsed = try support.responseJson(out.items);
    defer parsed.deinit();
    try testing.expectEqual(@as(usize, 41), parsed.value.object.get("data").?.array.items.len);
}

test "token inputs go to the host as arrays of ids" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var r = try run(&backend, "{\"input\":[[5,6],[7]]}");
    defer r.deinit();
    try r.result;
    try testing.expectEqualStrings("[[5,6],[7]]", backend.batch.items);
}

test "float and base64 carry the same float32 values" {
    var backend = FakeBackend{ .allocator = testing.allocator, .n_embd = 7 };
    defer backend.deinit();
    var floats = try run(&backend, "{\"input\":\"hello\"}");
    defer floats.deinit();
    try floats.result;
    var b64 = try run(&backend, "{\"input\":\"hello\",\"encoding_format\":\"base64\"}");
    defer b64.deinit();
    try b64.result;

    const f = try floats.json();
    defer f.deinit();
    const b = try b64.json();
    defer b.deinit();
    const numbers = f.value.object.get("data").?.array.items[0].object.get("embedding").?.array.items;
    const text = b.value.object.get("data").?.array.items[0].object.get("embedding").?.string;
    var bytes: [7 * 4]u8 = undefined;
    try std.base64.standard.Decoder.decode(&bytes, text);
    var sum: f64 = 0;
    for (numbers, 0..) |n, j| {
        const from_json: f32 = @floatCast(if (n == .float) n.float else @as(f64, @floatFromInt(n.integer)));
        const from_base64: f32 = @bitCast(std.mem.readInt(u32, bytes[j * 4 ..][0..4], .little));
        try testing.expectEqual(from_base64, from_json);
        sum += @as(f64, from_json) * from_json;
    }
    try testing.expectApproxEqAbs(@as(f64, 1), sum, 1e-6);
}

test "dimensions truncates and normalizes again; more than the model has is refused" {
    var backend = FakeBackend{ .allocator = testing.allocator, .n_embd = 6 };
    defer backend.deinit();
    var r = try run(&backend, "{\"input\":\"abc\",\"dimensions\":2}");
    defer r.deinit();
    try r.result;
    const parsed = try r.json();
    defer parsed.deinit();
    const v = parsed.value.object.get("data").?.array.items[0].object.get("embedding").?.array.items;
    try testing.expectEqual(@as(usize, 2), v.len);
    try testing.expectApproxEqAbs(@as(f64, 1), v[0].float * v[0].float + v[1].float * v[1].float, 1e-6);
    // the direction of the first two values is kept: 3 and 3.1
    try testing.expectApproxEqAbs(@as(f64, 3.0 / 3.1), v[0].float / v[1].float, 1e-6);

    var too_many = try run(&backend, "{\"input\":\"abc\",\"dimensions\":7}");
    defer too_many.deinit();
    try testing.expectError(error.InvalidRequest, too_many.result);
    try testing.expectEqualStrings("dimensions", too_many.diag.err.param.?);
    try testing.expect(std.mem.indexOf(u8, too_many.diag.err.message, "have 6 dimensions") != null);
    try testing.expectEqual(@as(usize, 0), too_many.out.items.len);
}

test "an input over the context is context_length_exceeded; a refused one names input" {
    var backend = FakeBackend{ .allocator = testing.allocator, .batch_error = error.PromptTooLong };
    defer backend.deinit();
    var r = try run(&backend, "{\"input\":\"long\"}");
    defer r.deinit();
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqual(@as(u16, 400), r.diag.err.status);
    try testing.expectEqualStrings("input", r.diag.err.param.?);
    try testing.expectEqualStrings("context_length_exceeded", r.diag.err.code.?);
    try testing.expect(!backend.computed);

    backend.batch_error = error.InvalidInput;
    var bad = try run(&backend, "{\"input\":[999999]}");
    defer bad.deinit();
    try testing.expectError(error.InvalidRequest, bad.result);
    try testing.expectEqualStrings("input", bad.diag.err.param.?);
}

test "floats are written so that they read back as the same float32" {
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    const xs = [_]f32{ 0.1, -0.0023064255, 1.0 / 3.0, 1e-7, 0, 1, -1, 3.4028235e38, 1.4e-45 };
    for (xs) |x| {
        out.clearRetainingCapacity();
        try appendFloat(out.writer(), x);
        const back: f32 = @floatCast(try std.fmt.parseFloat(f64, out.items));
        try testing.expectEqual(x, back);
    }
    out.clearRetainingCapacity();
    try appendFloat(out.writer(), 0.1);
    try testing.expectEqualStrings("0.1", out.items);
    // many random values
    var prng = std.Random.DefaultPrng.init(7);
    for (0..20000) |_| {
        const x: f32 = @bitCast(prng.random().int(u32));
        if (!std.math.isFinite(x)) continue;
        out.clearRetainingCapacity();
        try appendFloat(out.writer(), x);
        try testing.expectEqual(x, @as(f32, @floatCast(try std.fmt.parseFloat(f64, out.items))));
    }
}

test "base64 of float32 values matches std's encoding of the bytes" {
    const values = [_]f32{ 1, -2.5, 0.1, 7, 8 };
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendBase64(out.writer(), &values);
    var bytes: [20]u8 = undefined;
    for (values, 0..) |x, j| std.mem.writeInt(u32, bytes[j * 4 ..][0..4], @bitCast(x), .little);
    var expected: [32]u8 = undefined;
    const text = std.base64.standard.Encoder.encode(&expected, &bytes);
    try testing.expectEqualStrings(text, out.items[1 .. out.items.len - 1]);
}
