//! POST /v1/rerank (and the host's /rerank): the Jina/Cohere request that
//! llama-server accepts, checked into a `RerankRequest`; every (query,
//! document) pair scored by the host in one batch, through WASI-NN's
//! embedding mode with our extension `"pooling":"rank"` (set_input index 3
//! takes the pairs, get_output index 2 gives one float32 score each); the
//! results sorted by relevance_score, best first.
//!
//! `backend` is anything with setMetadata, setBatch, compute, output and info
//! (nn.Backend, or the fake in the tests below).

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");
const inputs = @import("../inputs.zig");
const vectors = @import("../embeddings/vectors.zig");
const backendError = @import("../embeddings/embed.zig").backendError;

const Diagnostic = shared.api_error.Diagnostic;
const Value = std.json.Value;

const log = std.log.scoped(.rerank);

/// What the app asks of the host: embedding mode, rank pooling.
pub const metadata = "{\"embedding\":true,\"pooling\":\"rank\"}";

pub const RerankRequest = struct {
    arena: std.heap.ArenaAllocator,
    model: ?[]const u8 = null,
    query: []const u8 = "",
    documents: []const []const u8 = &.{},
    /// At most this many results (all when null).
    top_n: ?u32 = null,
    return_documents: bool = false,

    pub fn deinit(self: *RerankRequest) void {
        self.arena.deinit();
    }
};

/// Parses and checks a rerank request. Fields this server does not know are
/// ignored, as on the other routes.
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !RerankRequest {
    var req = RerankRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();
    const obj = try fields.parseObject(arena, body, diag);

    req.model = try fields.optString(obj, "model", diag);
    req.query = (try fields.optString(obj, "query", diag)) orelse
        return diag.set(400, "query", null, "Missing required parameter: 'query'.", .{});
    if (req.query.len == 0) return diag.set(400, "query", null, "Invalid 'query': empty string. Give the text to rank the documents against.", .{});
    req.documents = try parseDocuments(arena, obj.get("documents"), diag);
    req.top_n = try fields.optCount(obj, "top_n", diag);
    req.return_documents = (try fields.optBool(obj, "return_documents", diag)) orelse false;
    return req;
}

/// `documents`: a non-empty array of strings or `{"text": ...}` objects
/// (Jina's and Cohere's shapes; an object's other fields are ignored).
fn parseDocuments(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const []const u8 {
    const v = value orelse return diag.set(400, "documents", null, "Missing required parameter: 'documents'.", .{});
    if (v != .array) return fields.typeError(diag, "documents", "an array of strings or {\"text\": ...} objects", v);
    const items = v.array.items;
    if (items.len == 0) return diag.set(400, "documents", null, "Invalid 'documents': empty array. Give at least one document to rank.", .{});
    if (items.len > inputs.max_inputs)
        return diag.set(400, "documents", null, "Invalid 'documents': at most {d} items, not {d}.", .{ inputs.max_inputs, items.len });
    const texts = try arena.alloc([]const u8, items.len);
    var param_buf: [48]u8 = undefined;
    for (items, 0..) |item, i| {
        const param = std.fmt.bufPrint(&param_buf, "documents[{d}]", .{i}) catch "documents";
        texts[i] = switch (item) {
            .string => |s| s,
            .object => |o| (try fields.optStringAt(o, "text", param, diag)) orelse
                return diag.set(400, param, null, "Invalid '{s}': an object needs a 'text' string.", .{param}),
            else => return fields.typeError(diag, param, "a string or a {\"text\": ...} object", item),
        };
    }
    return texts;
}

pub const Config = struct {
    /// The model id the response names.
    model_id: []const u8,
    /// The response's id (`rerank-...`).
    id: []const u8,
};

/// Scores the documents and writes the response. error.InvalidRequest (with
/// `diag` set) comes before anything was written. error.ClientGone: the write
/// failed.
pub fn rerank(allocator: std.mem.Allocator, backend: anytype, out: anytype, req: *const RerankRequest, cfg: Config, diag: *Diagnostic) !void {
    // The host refuses rank pooling on a model without it: that is the answer.
    backend.setMetadata(metadata) catch return diag.set(400, "model", "model_cannot_rerank", "The model '{s}' cannot rerank: it is not a reranker (a GGUF whose pooling type is rank, e.g. bge-reranker or Qwen3-Reranker). Name a model with the capability 'rerank'.", .{cfg.model_id});
    var batch = std.ArrayList(u8).init(allocator);
    defer batch.deinit();
    try appendPairs(&batch, req.query, req.documents);
    backend.setBatch(batch.items) catch |err| return inputError(err, diag, "set the documents");
    backend.compute() catch |err| return inputError(err, diag, "score the documents");

    const info = backend.info(allocator) catch return backendError(diag, "read the token counts");
    defer info.deinit();
    var tokens: u64 = 0;
    if (info.value.input_tokens_each) |each| {
        for (each) |n| tokens += @intCast(@max(n, 0));
    }
    const n = req.documents.len;
    const raw = backend.output(allocator, 2, n * 4) catch return backendError(diag, "read the scores");
    defer allocator.free(raw);
    if (raw.len != n * 4) {
        log.err("get_output(2) gave {d} bytes for {d} documents: not one float32 each", .{ raw.len, n });
        return backendError(diag, "read the scores");
    }
    const results = try allocator.alloc(Result, n);
    defer allocator.free(results);
    for (results, 0..) |*r, i| {
        r.* = .{ .index = i, .score = @bitCast(std.mem.readInt(u32, raw[i * 4 ..][0..4], .little)) };
        if (!std.math.isFinite(r.score)) {
            log.err("the score of document {d} is not finite", .{i});
            return backendError(diag, "score the documents");
        }
    }
    // Best first; equal scores keep the documents' order.
    std.sort.insertion(Result, results, {}, Result.better);

    var body = std.ArrayList(u8).init(allocator);
    defer body.deinit();
    const w = body.writer();
    try w.writeAll("Status: 200 OK\nContent-Type: application/json\n\n{\"id\":");
    try std.json.encodeJsonString(cfg.id, .{}, w);
    try w.writeAll(",\"object\":\"list\",\"model\":");
    try std.json.encodeJsonString(cfg.model_id, .{}, w);
    try w.writeAll(",\"results\":[");
    const shown = @min(n, req.top_n orelse n);
    for (results[0..shown], 0..) |r, k| {
        if (k > 0) try w.writeByte(',');
        try w.print("{{\"index\":{d},\"relevance_score\":", .{r.index});
        try vectors.appendFloat(w, r.score); // reads back as the very float32 llama.cpp gave
        if (req.return_documents) {
            try w.writeAll(",\"document\":{\"text\":");
            try std.json.encodeJsonString(req.documents[r.index], .{}, w);
            try w.writeByte('}');
        }
        try w.writeByte('}');
    }
    try w.print("],\"usage\":{{\"prompt_tokens\":{d},\"total_tokens\":{d}}}}}", .{ tokens, tokens });
    out.writeAll(body.items) catch return error.ClientGone;
}

const Result = struct {
    index: usize,
    score: f32,

    fn better(_: void, a: Result, b: Result) bool {
        return a.score > b.score;
    }
};

/// `[[query, document], ...]`: the pairs the host formats as llama.cpp does.
fn appendPairs(batch: *std.ArrayList(u8), query: []const u8, documents: []const []const u8) !void {
    const w = batch.writer();
    try w.writeByte('[');
    for (documents, 0..) |doc, i| {
        if (i > 0) try w.writeByte(',');
        try w.writeByte('[');
        try std.json.encodeJsonString(query, .{}, w);
        try w.writeByte(',');
        try std.json.encodeJsonString(doc, .{}, w);
        try w.writeByte(']');
    }
    try w.writeByte(']');
}

fn inputError(err: anyerror, diag: *Diagnostic, what: []const u8) error{ InvalidRequest, OutOfMemory } {
    return switch (err) {
        error.PromptTooLong => diag.set(400, "documents", "context_length_exceeded", "A document with the query is longer than the reranker's context. Shorten it or split it into several documents.", .{}),
        error.InvalidInput => diag.set(400, "documents", null, "The model refused a (query, document) pair.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, what),
    };
}

const testing = std.testing;
const support = shared.test_support;

/// A scripted reranker: a document's score is its length plus a half (so the
/// longest ranks first) and its tokens are its bytes.
const FakeReranker = struct {
    pub fn valuesEach(_: FakeReranker) usize {
        return 1;
    }

    pub fn values(_: FakeReranker, pair: Value, score: []f32) void {
        score[0] = @as(f32, @floatFromInt(pair.array.items[1].string.len)) + 0.5;
    }

    pub fn tokens(pair: Value) usize {
        return pair.array.items[1].string.len;
    }
};

/// A model that cannot rerank is refused at setMetadata (`metadata_error`), as the host refuses it.
const FakeBackend = support.BatchBackend(FakeReranker);

fn run(backend: *FakeBackend, body: []const u8) !support.Run {
    var r = support.Run.init();
    errdefer r.deinit();
    var parse_diag = Diagnostic{};
    var req = try parseRequest(testing.allocator, body, &parse_diag);
    defer req.deinit();
    r.result = rerank(testing.allocator, backend, r.out.writer(), &req, .{ .model_id = "tiny-reranker", .id = "rerank-1" }, &r.diag);
    return r;
}

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    try support.expectInvalid(parseRequest, body, 400, param, message_part);
}

test "documents are strings or {text} objects" {
    var diag = Diagnostic{};
    var req = try parseRequest(testing.allocator, "{\"model\":\"m\",\"query\":\"q\",\"documents\":[\"a\",{\"text\":\"b\",\"id\":7}],\"top_n\":1,\"return_documents\":true}", &diag);
    defer req.deinit();
    try testing.expectEqualStrings("q", req.query);
    try testing.expectEqual(@as(usize, 2), req.documents.len);
    try testing.expectEqualStrings("b", req.documents[1]);
    try testing.expectEqual(@as(?u32, 1), req.top_n);
    try testing.expect(req.return_documents);
}

test "rerank requests the API refuses" {
    try expectInvalid("{\"documents\":[\"a\"]}", "query", "Missing required parameter: 'query'");
    try expectInvalid("{\"query\":\"\",\"documents\":[\"a\"]}", "query", "empty string");
    try expectInvalid("{\"query\":3,\"documents\":[\"a\"]}", "query", "expected a string");
    try expectInvalid("{\"query\":\"q\"}", "documents", "Missing required parameter: 'documents'");
    try expectInvalid("{\"query\":\"q\",\"documents\":[]}", "documents", "empty array");
    try expectInvalid("{\"query\":\"q\",\"documents\":\"a\"}", "documents", "expected an array");
    try expectInvalid("{\"query\":\"q\",\"documents\":[\"a\",5]}", "documents[1]", "expected a string or");
    try expectInvalid("{\"query\":\"q\",\"documents\":[{\"title\":\"a\"}]}", "documents[0]", "needs a 'text' string");
    try expectInvalid("{\"query\":\"q\",\"documents\":[{\"text\":1}]}", "documents[0]", "expected a string");
    try expectInvalid("{\"query\":\"q\",\"documents\":[\"a\"],\"top_n\":0}", "top_n", "at least 1");
    try expectInvalid("{\"query\":\"q\",\"documents\":[\"a\"],\"return_documents\":\"yes\"}", "return_documents", "a boolean");
}

test "results come best first, with their index, cut to top_n" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var r = try run(&backend, "{\"query\":\"q\\\"\",\"documents\":[\"bb\",\"dddd\",{\"text\":\"a\"},\"ccc\"],\"top_n\":3,\"return_documents\":true}");
    defer r.deinit();
    try r.result;
    try testing.expectEqualStrings(metadata, backend.metadata.items);
    try testing.expectEqualStrings("[[\"q\\\"\",\"bb\"],[\"q\\\"\",\"dddd\"],[\"q\\\"\",\"a\"],[\"q\\\"\",\"ccc\"]]", backend.batch.items);
    const parsed = try r.json();
    defer parsed.deinit();
    const root = parsed.value.object;
    try testing.expectEqualStrings("tiny-reranker", root.get("model").?.string);
    try testing.expectEqualStrings("rerank-1", root.get("id").?.string);
    const results = root.get("results").?.array.items;
    try testing.expectEqual(@as(usize, 3), results.len);
    const order = [_]i64{ 1, 3, 0 };
    const texts = [_][]const u8{ "dddd", "ccc", "bb" };
    for (results, order, texts) |item, index, text| {
        try testing.expectEqual(index, item.object.get("index").?.integer);
        try testing.expectEqualStrings(text, item.object.get("document").?.object.get("text").?.string);
    }
    try testing.expectEqual(@as(f64, 4.5), results[0].object.get("relevance_score").?.float);
    try testing.expectEqual(@as(i64, 10), root.get("usage").?.object.get("prompt_tokens").?.integer);
}

test "without return_documents no document is written" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var r = try run(&backend, "{\"query\":\"q\",\"documents\":[\"a\",\"bb\"]}");
    defer r.deinit();
    try r.result;
    try testing.expect(!support.contains(r.out.items, "document\""));
    try support.expectInOrder(r.out.items, &.{ "\"index\":1", "\"index\":0" });
}

test "a model that cannot rerank and a pair too long are 400s" {
    var backend = FakeBackend{ .allocator = testing.allocator, .metadata_error = error.BackendFailed };
    defer backend.deinit();
    var r = try run(&backend, "{\"query\":\"q\",\"documents\":[\"a\"]}");
    defer r.deinit();
    try testing.expectError(error.InvalidRequest, r.result);
    try testing.expectEqual(@as(u16, 400), r.diag.err.status);
    try support.expectContains(r.diag.err.message, "'tiny-reranker' cannot rerank");
    backend.metadata_error = null;
    backend.batch_error = error.PromptTooLong;
    var r2 = try run(&backend, "{\"query\":\"q\",\"documents\":[\"a\"]}");
    defer r2.deinit();
    try testing.expectError(error.InvalidRequest, r2.result);
    try testing.expectEqualStrings("context_length_exceeded", r2.diag.err.code.?);
}
