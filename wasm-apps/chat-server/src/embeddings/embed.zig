//! POST /v1/embeddings: the request checked into an `EmbeddingRequest`, all
//! inputs embedded by the host in one batch (set_input index 3, compute), and
//! the vectors written from the host's raw float32 output (get_output index 2)
//! as JSON numbers or base64 (vectors.zig).
//!
//! `backend` is anything with setMetadata, setBatch, compute, output and info
//! (nn.Backend, or the fake in the tests below).

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");
const inputs = @import("../inputs.zig");
const vectors = @import("vectors.zig");

const nn = shared.nn;
const Diagnostic = shared.api_error.Diagnostic;
const Input = inputs.Input;
const Value = std.json.Value;

const log = std.log.scoped(.embeddings);

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
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !EmbeddingRequest {
    var req = EmbeddingRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();
    const obj = try fields.parseObject(arena, body, diag);

    req.model = try fields.optString(obj, "model", diag);
    req.inputs = try inputs.parseInputs(arena, obj.get("input"), "input", diag);
    if (try fields.optString(obj, "encoding_format", diag)) |format| {
        req.encoding = std.meta.stringToEnum(Encoding, format) orelse
            return diag.set(400, "encoding_format", null, "Invalid value for 'encoding_format': '{s}'. Supported values are: 'float' and 'base64'.", .{format});
    }
    req.dimensions = try fields.optCount(obj, "dimensions", diag);
    _ = try fields.optString(obj, "user", diag);
    return req;
}

pub const Config = struct {
    /// The model id the response names.
    model_id: []const u8,
};

/// Embeds the request's inputs and writes the response. error.InvalidRequest
/// (with `diag` set) comes before anything was written. error.ClientGone:
/// the write failed.
pub fn embed(allocator: std.mem.Allocator, backend: anytype, out: anytype, req: *const EmbeddingRequest, cfg: Config, diag: *Diagnostic) !void {
    backend.setMetadata("{\"embedding\":true}") catch return backendError(diag, "switch to embedding mode");
    var batch = std.ArrayList(u8).init(allocator);
    defer batch.deinit();
    try inputs.appendBatch(&batch, req.inputs);
    backend.setBatch(batch.items) catch |err| return inputError(err, diag, "set the inputs");
    backend.compute() catch |err| return inputError(err, diag, "compute the embeddings");

    const info = backend.info(allocator) catch return backendError(diag, "read the token counts");
    defer info.deinit();
    const counts = readCounts(info.value);
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
        vectors.readVector(raw[i * n_embd * 4 ..][0 .. dims * 4], vector);
        if (dims < n_embd) vectors.normalize(vector);
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"object\":\"embedding\",\"index\":{d},\"embedding\":", .{i});
        switch (req.encoding) {
            .float => try vectors.appendFloats(w, vector),
            .base64 => try vectors.appendBase64(w, vector),
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

fn inputError(err: anyerror, diag: *Diagnostic, what: []const u8) error{ InvalidRequest, OutOfMemory } {
    return switch (err) {
        error.PromptTooLong => diag.set(400, "input", "context_length_exceeded", "An input is longer than the embedding model's context. Shorten it or split it into several inputs.", .{}),
        error.InvalidInput => diag.set(400, "input", null, "The model refused an input: a token id it does not have, or an input with no tokens.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, what),
    };
}

/// A failure of the host that is not the request's: a 500 whose cause the log has.
pub fn backendError(diag: *Diagnostic, what: []const u8) error{InvalidRequest} {
    return diag.setServerError("The model backend could not {s}; the server log has the details.", .{what});
}

const Counts = struct {
    /// 0 when the host does not say.
    n_embedding: usize = 0,
    prompt_tokens: u64 = 0,
};

/// From get_output(1): the vector size and the prompt tokens of all inputs
/// (`input_tokens_each`, else `input_tokens`).
fn readCounts(info: nn.Info) Counts {
    var counts = Counts{};
    if (info.n_embedding) |n| if (n > 0 and n < 1 << 20) {
        counts.n_embedding = @intCast(n);
    };
    if (info.input_tokens_each) |each| {
        for (each) |n| {
            if (n > 0) counts.prompt_tokens += @intCast(n);
        }
        return counts;
    }
    if (info.input_tokens) |n| if (n > 0) {
        counts.prompt_tokens = @intCast(n);
    };
    return counts;
}

const testing = std.testing;

const support = shared.test_support;

/// A scripted embedding model: every input embeds to a vector of `n_embd`
/// values from its position and the input's length, normalized; its tokens
/// are its length.
const FakeEmbedder = struct {
    n_embd: usize = 4,

    fn length(item: Value) usize {
        return if (item == .string) item.string.len else item.array.items.len;
    }

    pub fn valuesEach(self: FakeEmbedder) usize {
        return self.n_embd;
    }

    pub fn values(_: FakeEmbedder, item: Value, vector: []f32) void {
        const len: f32 = @floatFromInt(length(item));
        for (vector, 0..) |*x, j| x.* = len + @as(f32, @floatFromInt(j)) * 0.1;
        vectors.normalize(vector);
    }

    pub fn tokens(item: Value) usize {
        return length(item);
    }
};

const FakeBackend = support.BatchBackend(FakeEmbedder);

const Run = support.Run;

fn run(backend: *FakeBackend, body: []const u8) !Run {
    var r = Run.init();
    errdefer r.deinit();
    var parse_diag = Diagnostic{};
    var req = try parseRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    r.result = embed(testing.allocator, backend, r.out.writer(), &req, .{ .model_id = "tiny" }, &r.diag);
    return r;
}

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    try support.expectInvalid(parseRequest, body, 400, param, message_part);
}

test "input takes the four shapes" {
    var diag = Diagnostic{};
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
    for (0..inputs.max_inputs) |_| try many.appendSlice(",\"x\"");
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
    var backend = FakeBackend{ .allocator = testing.allocator, .model = .{ .n_embd = 1000 } };
    defer backend.deinit();
    var body = std.ArrayList(u8).init(testing.allocator);
    defer body.deinit();
    try body.appendSlice("{\"input\":[\"a\"");
    for (0..40) |_| try body.appendSlice(",\"bb\"");
    try body.appendSlice("]}");
    var diag = Diagnostic{};
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
    var backend = FakeBackend{ .allocator = testing.allocator, .model = .{ .n_embd = 7 } };
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
    var backend = FakeBackend{ .allocator = testing.allocator, .model = .{ .n_embd = 6 } };
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
