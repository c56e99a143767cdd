//! OpenAI's Responses API, the response: what the chat path generates
//! written as a `response` object, or as the Responses stream of events
//! (each with its `sequence_number`): response.created, response.in_progress,
//! then per output item output_item.added, its parts and deltas
//! (reasoning_text, output_text, function_call_arguments) and
//! output_item.done, then response.completed (or .incomplete, .failed).

const std = @import("std");
const shared = @import("shared");
const completion = @import("../chat/completion.zig");
const request = @import("request.zig");

const ApiError = shared.api_error.ApiError;
const Finish = @import("../generation.zig").Finish;
const Usage = completion.Usage;

/// The response header that names the tool types a request sent and the
/// server left out (hosted tools it cannot run), comma-separated.
pub const ignored_tools_header = "LlamaEdge-Ignored-Tools";

/// What a response says of itself beside its output.
pub const Envelope = struct {
    /// `resp_` and random letters; the items' ids take its random part.
    id: []const u8,
    created_at: i64,
    model: []const u8,
    req: *const request.Request,
};

pub const Status = enum { in_progress, completed, incomplete, failed };

/// The response object. `items` is the output items' JSON, comma-joined;
/// `usage` is written when given; a failed response carries `err`.
pub fn appendResponse(w: anytype, env: Envelope, status: Status, items: []const u8, usage: ?Usage, err: ?ApiError) !void {
    const req = env.req;
    try w.print("{{\"id\":\"{s}\",\"object\":\"response\",\"created_at\":{d},\"status\":\"{s}\",\"background\":false,\"error\":", .{ env.id, env.created_at, @tagName(status) });
    if (err) |e| {
        try w.writeAll("{\"code\":\"server_error\",\"message\":");
        try std.json.encodeJsonString(e.message, .{}, w);
        try w.writeByte('}');
    } else try w.writeAll("null");
    try w.writeAll(",\"incomplete_details\":");
    try w.writeAll(if (status == .incomplete) "{\"reason\":\"max_output_tokens\"}" else "null");
    try w.print(",\"instructions\":{s},\"max_output_tokens\":", .{req.instructions});
    if (req.max_output_tokens) |m| try w.print("{d}", .{m}) else try w.writeAll("null");
    try w.writeAll(",\"model\":");
    try std.json.encodeJsonString(env.model, .{}, w);
    try w.print(",\"output\":[{s}],\"parallel_tool_calls\":{},\"previous_response_id\":", .{ items, req.chat.parallel_tool_calls });
    if (req.previous_response_id) |p| try std.json.encodeJsonString(p, .{}, w) else try w.writeAll("null");
    try w.print(",\"reasoning\":{s},\"store\":{},\"temperature\":", .{ req.reasoning, req.store });
    if (req.chat.temperature) |t| try w.print("{d}", .{t}) else try w.writeAll("null");
    try w.print(",\"text\":{s},\"tool_choice\":{s},\"tools\":{s},\"top_p\":", .{ req.text, req.tool_choice, req.tools });
    if (req.chat.top_p) |p| try w.print("{d}", .{p}) else try w.writeAll("null");
    try w.print(",\"truncation\":\"{s}\",\"usage\":", .{req.truncation});
    if (usage) |u| try appendUsage(w, u) else try w.writeAll("null");
    try w.print(",\"metadata\":{s}}}", .{req.metadata});
}

/// OpenAI's usage: `cache_write_tokens` are the prompt tokens the host read
/// into its KV cache (those not reused), which a next turn may reuse.
fn appendUsage(w: anytype, u: Usage) !void {
    try w.print("{{\"input_tokens\":{d},\"input_tokens_details\":{{\"cached_tokens\":{d},\"cache_write_tokens\":{d}}}," ++
        "\"output_tokens\":{d},\"output_tokens_details\":{{\"reasoning_tokens\":{d}}},\"total_tokens\":{d}}}", .{
        u.prompt_tokens, u.cached_tokens, u.prompt_tokens -| u.cached_tokens, u.completion_tokens, u.reasoning_tokens, u.prompt_tokens + u.completion_tokens,
    });
}

/// The status of the response and of its last item, from how generation ended.
fn statusOf(finish: Finish) Status {
    return if (finish == .length) .incomplete else .completed;
}

const ItemKind = enum { reasoning, message, function_call };

/// One output item's JSON. `text` is the reasoning, the message's text, or
/// the call's arguments.
fn appendItem(w: anytype, kind: ItemKind, id: []const u8, status: Status, text: []const u8, call: ?Call) !void {
    switch (kind) {
        .reasoning => {
            try w.print("{{\"id\":\"{s}\",\"type\":\"reasoning\",\"summary\":[],\"content\":[", .{id});
            if (status != .in_progress) try appendPart(w, .reasoning, text);
            try w.print("],\"status\":\"{s}\"}}", .{@tagName(status)});
        },
        .message => {
            try w.print("{{\"id\":\"{s}\",\"type\":\"message\",\"role\":\"assistant\",\"status\":\"{s}\",\"content\":[", .{ id, @tagName(status) });
            if (status != .in_progress) try appendPart(w, .message, text);
            try w.writeAll("]}");
        },
        .function_call => {
            const c = call.?;
            try w.print("{{\"id\":\"{s}\",\"type\":\"function_call\",\"status\":\"{s}\",\"call_id\":", .{ id, @tagName(status) });
            try std.json.encodeJsonString(c.call_id, .{}, w);
            try w.writeAll(",\"name\":");
            try std.json.encodeJsonString(c.name, .{}, w);
            try w.writeAll(",\"arguments\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
    }
}

/// A content part: `reasoning_text`, or `output_text` with no annotations.
fn appendPart(w: anytype, kind: ItemKind, text: []const u8) !void {
    try w.writeAll(if (kind == .reasoning) "{\"type\":\"reasoning_text\",\"text\":" else "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
    try std.json.encodeJsonString(text, .{}, w);
    try w.writeByte('}');
}

const Call = struct { call_id: []const u8, name: []const u8 };

/// An item's id: its kind's prefix, the response's random part and the
/// item's index, so that the ids of one response differ.
fn itemId(buf: []u8, kind: ItemKind, response_id: []const u8, index: u32) []const u8 {
    const prefix = switch (kind) {
        .reasoning => "rs",
        .message => "msg",
        .function_call => "fc",
    };
    const random = if (std.mem.indexOfScalar(u8, response_id, '_')) |i| response_id[i + 1 ..] else response_id;
    return std.fmt.bufPrint(buf, "{s}_{s}{d}", .{ prefix, random, index }) catch prefix;
}

/// Writes the chat path's output as a response object or as Responses
/// events. `headers` are extra WAGI header lines (`Name: value\n`).
pub fn Output(comptime Out: type) type {
    return struct {
        const Self = @This();
        out: Out,
        env: Envelope,
        headers: []const u8,
        event: std.ArrayList(u8),
        sequence: u32 = 0,
        /// The finished items' JSON, comma-joined, for the final response.
        items: std.ArrayList(u8),
        /// The open item: its kind, id, text so far and call.
        open: ?ItemKind = null,
        open_id_buf: [64]u8 = undefined,
        open_id: []const u8 = "",
        open_text: std.ArrayList(u8),
        open_call: Call = .{ .call_id = "", .name = "" },
        call_buf: std.ArrayList(u8),
        count: u32 = 0,
        status: Status = .completed,
        /// The finished response object, once written (what `store` keeps).
        final: std.ArrayList(u8),

        pub fn init(allocator: std.mem.Allocator, out: Out, env: Envelope, headers: []const u8) Self {
            return .{
                .out = out,
                .env = env,
                .headers = headers,
                .event = std.ArrayList(u8).init(allocator),
                .items = std.ArrayList(u8).init(allocator),
                .open_text = std.ArrayList(u8).init(allocator),
                .call_buf = std.ArrayList(u8).init(allocator),
                .final = std.ArrayList(u8).init(allocator),
            };
        }

        pub fn deinit(self: *Self) void {
            self.event.deinit();
            self.items.deinit();
            self.open_text.deinit();
            self.call_buf.deinit();
            self.final.deinit();
        }

        fn put(self: *Self, bytes: []const u8) completion.ClientGone!void {
            self.out.writeAll(bytes) catch return error.ClientGone;
        }

        /// One event: `fmt` is the data object's fields after its type and sequence number.
        fn send(self: *Self, comptime kind: []const u8, comptime fmt: []const u8, args: anytype) !void {
            self.event.clearRetainingCapacity();
            const w = self.event.writer();
            try w.print("event: " ++ kind ++ "\ndata: {{\"type\":\"" ++ kind ++ "\",\"sequence_number\":{d},", .{self.sequence});
            try w.print(fmt, args);
            try w.writeAll("}\n\n");
            self.sequence += 1;
            try self.put(self.event.items);
        }

        /// An event carrying the whole response.
        fn sendResponse(self: *Self, comptime kind: []const u8, status: Status, usage: ?Usage, err: ?ApiError) !void {
            var body = std.ArrayList(u8).init(self.event.allocator);
            defer body.deinit();
            try appendResponse(body.writer(), self.env, status, self.items.items, usage, err);
            if (status == .completed or status == .incomplete) try self.final.appendSlice(body.items);
            try self.send(kind, "\"response\":{s}", .{body.items});
        }

        fn json(self: *Self, value: []const u8) !std.ArrayList(u8) {
            var buf = std.ArrayList(u8).init(self.event.allocator);
            try std.json.encodeJsonString(value, .{}, buf.writer());
            return buf;
        }

        fn item(self: *Self, status: Status) !std.ArrayList(u8) {
            var buf = std.ArrayList(u8).init(self.event.allocator);
            try appendItem(buf.writer(), self.open.?, self.open_id, status, self.open_text.items, self.open_call);
            return buf;
        }

        fn openItem(self: *Self, kind: ItemKind) !void {
            try self.closeItem(.completed);
            self.open = kind;
            self.open_id = itemId(&self.open_id_buf, kind, self.env.id, self.count);
            self.open_text.clearRetainingCapacity();
            var added = try self.item(.in_progress);
            defer added.deinit();
            try self.send("response.output_item.added", "\"output_index\":{d},\"item\":{s}", .{ self.count, added.items });
            if (kind != .function_call) {
                var part = std.ArrayList(u8).init(self.event.allocator);
                defer part.deinit();
                try appendPart(part.writer(), kind, "");
                try self.send("response.content_part.added", "\"item_id\":\"{s}\",\"output_index\":{d},\"content_index\":0,\"part\":{s}", .{ self.open_id, self.count, part.items });
            }
        }

        fn closeItem(self: *Self, status: Status) !void {
            const kind = self.open orelse return;
            var full = try self.json(self.open_text.items);
            defer full.deinit();
            const at = .{ self.open_id, self.count, full.items };
            switch (kind) {
                .reasoning => try self.send("response.reasoning_text.done", "\"item_id\":\"{s}\",\"output_index\":{d},\"content_index\":0,\"text\":{s}", at),
                .message => try self.send("response.output_text.done", "\"item_id\":\"{s}\",\"output_index\":{d},\"content_index\":0,\"logprobs\":[],\"text\":{s}", at),
                .function_call => {
                    var name = try self.json(self.open_call.name);
                    defer name.deinit();
                    try self.send("response.function_call_arguments.done", "\"item_id\":\"{s}\",\"output_index\":{d},\"name\":{s},\"arguments\":{s}", .{ self.open_id, self.count, name.items, full.items });
                },
            }
            if (kind != .function_call) {
                var part = std.ArrayList(u8).init(self.event.allocator);
                defer part.deinit();
                try appendPart(part.writer(), kind, self.open_text.items);
                try self.send("response.content_part.done", "\"item_id\":\"{s}\",\"output_index\":{d},\"content_index\":0,\"part\":{s}", .{ self.open_id, self.count, part.items });
            }
            var done = try self.item(status);
            defer done.deinit();
            try self.send("response.output_item.done", "\"output_index\":{d},\"item\":{s}", .{ self.count, done.items });
            if (self.items.items.len > 0) try self.items.append(',');
            try self.items.appendSlice(done.items);
            self.open = null;
            self.count += 1;
        }

        fn delta(self: *Self, comptime kind: []const u8, comptime extra: []const u8, bytes: []const u8) !void {
            try self.open_text.appendSlice(bytes);
            var d = try self.json(bytes);
            defer d.deinit();
            try self.send(kind, "\"item_id\":\"{s}\",\"output_index\":{d}," ++ extra ++ "\"delta\":{s}", .{ self.open_id, self.count, d.items });
        }

        pub fn start(self: *Self, _: completion.Info) !void {
            self.event.clearRetainingCapacity();
            try self.event.writer().print("Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n{s}\n", .{self.headers});
            try self.put(self.event.items);
            try self.sendResponse("response.created", .in_progress, null, null);
            try self.sendResponse("response.in_progress", .in_progress, null, null);
        }

        pub fn reasoning(self: *Self, _: u32, bytes: []const u8, _: ?[]const u8) !void {
            if (self.open != .reasoning) try self.openItem(.reasoning);
            try self.delta("response.reasoning_text.delta", "\"content_index\":0,", bytes);
        }

        pub fn text(self: *Self, _: u32, bytes: []const u8, _: ?[]const u8) !void {
            if (self.open != .message) try self.openItem(.message);
            try self.delta("response.output_text.delta", "\"content_index\":0,\"logprobs\":[],", bytes);
        }

        pub fn callStart(self: *Self, _: u32, _: u32, id: []const u8, name: []const u8, _: ?[]const u8) !void {
            try self.closeItem(.completed);
            self.call_buf.clearRetainingCapacity();
            try self.call_buf.appendSlice(id);
            try self.call_buf.appendSlice(name);
            self.open_call = .{ .call_id = self.call_buf.items[0..id.len], .name = self.call_buf.items[id.len..] };
            try self.openItem(.function_call);
        }

        pub fn callArguments(self: *Self, _: u32, _: u32, fragment: []const u8, _: ?[]const u8) !void {
            try self.delta("response.function_call_arguments.delta", "", fragment);
        }

        pub fn choiceEnd(self: *Self, _: u32, finish: Finish, _: ?[]const u8, _: ?[]const u8) !void {
            self.status = statusOf(finish);
            // A response always has an answer or a call: an empty message when neither came.
            if (self.count == 0 and self.open != .message and self.open != .function_call) try self.openItem(.message);
            try self.closeItem(self.status);
        }

        pub fn end(self: *Self, usage: Usage) !void {
            if (self.status == .incomplete) return self.sendResponse("response.incomplete", .incomplete, usage, null);
            try self.sendResponse("response.completed", .completed, usage, null);
        }

        pub fn fail(self: *Self, err: ApiError) !void {
            try self.sendResponse("response.failed", .failed, null, err);
        }

        pub fn whole(self: *Self, _: completion.Info, results: []const completion.Choice, usage: Usage) !void {
            const r = results[0];
            const status = statusOf(r.finish);
            var id_buf: [64]u8 = undefined;
            const w = self.items.writer();
            var n: u32 = 0;
            if (r.reasoning.len > 0) {
                try appendItem(w, .reasoning, itemId(&id_buf, .reasoning, self.env.id, n), .completed, r.reasoning, null);
                n += 1;
            }
            const content = r.content orelse "";
            if (content.len > 0 or r.tool_calls.len == 0) {
                if (n > 0) try w.writeByte(',');
                try appendItem(w, .message, itemId(&id_buf, .message, self.env.id, n), status, content, null);
                n += 1;
            }
            for (r.tool_calls) |call| {
                if (n > 0) try w.writeByte(',');
                try appendItem(w, .function_call, itemId(&id_buf, .function_call, self.env.id, n), .completed, call.arguments, .{ .call_id = call.id, .name = call.name });
                n += 1;
            }
            try appendResponse(self.final.writer(), self.env, status, self.items.items, usage, null);
            self.event.clearRetainingCapacity();
            try self.event.writer().print("Status: 200 OK\nContent-Type: application/json\n{s}\n", .{self.headers});
            try self.event.appendSlice(self.final.items);
            try self.put(self.event.items);
        }
    };
}

const testing = std.testing;
const Diagnostic = shared.api_error.Diagnostic;
const FakeBackend = shared.test_support.FakeBackend;
const expectInOrder = shared.test_support.expectInOrder;
const test_cfg = @import("../chat/tests.zig").test_cfg;
const call_tokens = @import("../chat/tests.zig").call_tokens;

/// Runs a Responses request on the fake backend, streamed or whole.
fn runResponses(backend: *FakeBackend, body: []const u8, cfg: completion.Config, out: *std.ArrayList(u8)) !void {
    var diag = Diagnostic{};
    var parsed = try request.parseRequest(testing.allocator, body, request.NoHistory{}, &diag);
    defer parsed.deinit();
    const env = Envelope{ .id = "resp_abc", .created_at = 7, .model = "tiny", .req = &parsed };
    var output = Output(@TypeOf(out.writer())).init(testing.allocator, out.writer(), env, "");
    defer output.deinit();
    try completion.generate(testing.allocator, backend, &output, &parsed.chat, cfg, &diag);
}

test "a whole response: a message with output_text, usage, the request echoed" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runResponses(&backend, "{\"model\":\"tiny\",\"input\":\"hi\",\"metadata\":{\"a\":\"b\"},\"temperature\":0}", test_cfg, &out);
    var parsed = try shared.test_support.responseJson(out.items);
    defer parsed.deinit();
    const o = parsed.value.object;
    try testing.expectEqualStrings("completed", o.get("status").?.string);
    const message = o.get("output").?.array.items[0].object;
    try testing.expectEqualStrings("msg_abc0", message.get("id").?.string);
    try testing.expectEqualStrings("Hi there", message.get("content").?.array.items[0].object.get("text").?.string);
    const usage = o.get("usage").?.object;
    try testing.expectEqual(@as(i64, 2), usage.get("output_tokens").?.integer);
    try testing.expectEqual(usage.get("input_tokens").?.integer + 2, usage.get("total_tokens").?.integer);
    try testing.expectEqualStrings("b", o.get("metadata").?.object.get("a").?.string);
}

test "the Responses events of a function call, in order, each numbered" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &call_tokens };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runResponses(&backend,
        \\{"model":"tiny","stream":true,"input":"weather?",
        \\"tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}
    , test_cfg, &out);
    try expectInOrder(out.items, &.{
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_abc\"",
        "\"status\":\"in_progress\"",
        "event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,",
        "{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_abc0\",\"type\":\"message\"",
        "{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_abc0\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\"",
        "\"type\":\"response.output_text.delta\"",
        "\"type\":\"response.output_text.done\"",
        "\"type\":\"response.output_item.done\"",
        "\"type\":\"response.output_item.added\",\"sequence_number\":",
        "\"output_index\":1,\"item\":{\"id\":\"fc_abc1\",\"type\":\"function_call\",\"status\":\"in_progress\",\"call_id\":\"call_",
        "\"type\":\"response.function_call_arguments.delta\"",
        "\"type\":\"response.function_call_arguments.done\"",
        "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":",
        "\"type\":\"response.output_item.done\"",
        "event: response.completed\n",
        "\"output\":[{\"id\":\"msg_abc0\"",
        "{\"id\":\"fc_abc1\",\"type\":\"function_call\",\"status\":\"completed\"",
        "\"usage\":{\"input_tokens\":",
    });
    try testing.expect(std.mem.indexOf(u8, out.items, "tool_call>") == null);
}

test "a response cut by max_output_tokens is incomplete, streamed and whole" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "c" } };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runResponses(&backend, "{\"input\":\"hi\",\"max_output_tokens\":1,\"stream\":true}", test_cfg, &out);
    try expectInOrder(out.items, &.{ "\"status\":\"incomplete\"", "event: response.incomplete\n", "\"incomplete_details\":{\"reason\":\"max_output_tokens\"}" });
    out.clearRetainingCapacity();
    try runResponses(&backend, "{\"input\":\"hi\",\"max_output_tokens\":1}", test_cfg, &out);
    try expectInOrder(out.items, &.{ "\"status\":\"incomplete\"", "\"incomplete_details\":{\"reason\":\"max_output_tokens\"}" });
}

test "thinking becomes a reasoning item before the message, and counts as reasoning tokens" {
    var cfg = test_cfg;
    cfg.template = null;
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "hmm", " yes", "</think>", "Four." }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try runResponses(&backend, "{\"input\":\"2+2?\",\"stream\":true}", cfg, &out);
    try expectInOrder(out.items, &.{
        "\"item\":{\"id\":\"rs_abc0\",\"type\":\"reasoning\",\"summary\":[],\"content\":[],\"status\":\"in_progress\"}",
        "\"part\":{\"type\":\"reasoning_text\",\"text\":\"\"}",
        "{\"type\":\"response.reasoning_text.delta\",\"sequence_number\":4,\"item_id\":\"rs_abc0\",\"output_index\":0,\"content_index\":0,\"delta\":\"hmm\"}",
        "\"type\":\"response.reasoning_text.done\"",
        "\"text\":\"hmm yes\"",
        "\"item\":{\"id\":\"msg_abc1\"",
        "\"delta\":\"Four.\"",
        "\"output_tokens_details\":{\"reasoning_tokens\":2}",
    });
    out.clearRetainingCapacity();
    try runResponses(&backend, "{\"input\":\"2+2?\"}", cfg, &out);
    try expectInOrder(out.items, &.{ "{\"id\":\"rs_abc0\",\"type\":\"reasoning\",\"summary\":[],\"content\":[{\"type\":\"reasoning_text\",\"text\":\"hmm yes\"}]", "\"text\":\"Four.\"", "\"reasoning_tokens\":2" });
}
