//! Anthropic's Messages API, the response: what the chat path generates
//! written as a Message or as Anthropic's SSE events, and errors in
//! Anthropic's shape.

const std = @import("std");
const shared = @import("shared");
const completion = @import("../chat/completion.zig");
const request = @import("request.zig");

const ApiError = shared.api_error.ApiError;
const Finish = @import("../generation.zig").Finish;
const Thinking = request.Thinking;
const Diagnostic = shared.api_error.Diagnostic;

/// Anthropic's error type for a status.
fn errorType(status: u16) []const u8 {
    return switch (status) {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        405 => "invalid_request_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        else => "api_error",
    };
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub fn appendError(out: *std.ArrayList(u8), err: ApiError) !void {
    const w = out.writer();
    try w.print("{{\"type\":\"error\",\"error\":{{\"type\":\"{s}\",\"message\":", .{errorType(err.status)});
    try std.json.encodeJsonString(err.message, .{}, w);
    try w.writeAll("}}");
}

/// The stop reason for a finish: a stop string the client gave is
/// `stop_sequence`, the model's own end `end_turn`.
fn stopReason(finish: Finish, matched: ?[]const u8, stops: []const []const u8) struct { reason: []const u8, sequence: ?[]const u8 } {
    return switch (finish) {
        .length => .{ .reason = "max_tokens", .sequence = null },
        .tool_calls => .{ .reason = "tool_use", .sequence = null },
        .stop => if (matched) |m| for (stops) |s| {
            if (std.mem.eql(u8, s, m)) break .{ .reason = "stop_sequence", .sequence = m };
        } else .{ .reason = "end_turn", .sequence = null } else .{ .reason = "end_turn", .sequence = null },
    };
}

/// `toolu_` ids from the chat path's call ids.
fn appendToolId(w: anytype, call_id: []const u8) !void {
    const rest = if (std.mem.startsWith(u8, call_id, "call_")) call_id[5..] else call_id;
    try w.writeByte('"');
    try w.writeAll("toolu_");
    try w.writeAll(rest);
    try w.writeByte('"');
}

/// A thinking block's `signature`: the SHA-256 of its text, in hex. The API
/// requires the field and clients pass it back as they got it; there is no
/// key here to sign with, so it is a digest, and it is not checked when the
/// block comes back.
pub const Signature = struct {
    hash: std.crypto.hash.sha2.Sha256 = std.crypto.hash.sha2.Sha256.init(.{}),

    pub fn update(self: *Signature, text: []const u8) void {
        self.hash.update(text);
    }

    pub fn final(self: *Signature) [64]u8 {
        var digest: [32]u8 = undefined;
        self.hash.final(&digest);
        return std.fmt.bytesToHex(digest, .lower);
    }
};

/// Writes the chat path's output as a Message or as Anthropic's events:
/// message_start and a ping, then per content block content_block_start,
/// deltas (thinking_delta and a closing signature_delta, text_delta,
/// input_json_delta) and content_block_stop, then message_delta with the
/// stop reason and usage, and message_stop.
pub fn Output(comptime Out: type) type {
    return struct {
        const Self = @This();
        out: Out,
        id: []const u8,
        model: []const u8,
        stops: []const []const u8,
        thinking: Thinking,
        event: std.ArrayList(u8),
        /// The open content block: its index and kind.
        block: ?enum { thinking, text, tool_use } = null,
        blocks: u32 = 0,
        signature: Signature = .{},
        stop_reason: []const u8 = "end_turn",
        stop_sequence: ?[]const u8 = null,
        input_tokens: u32 = 0,

        pub fn init(allocator: std.mem.Allocator, out: Out, id: []const u8, model: []const u8, stops: []const []const u8, thinking: Thinking) Self {
            return .{ .out = out, .id = id, .model = model, .stops = stops, .thinking = thinking, .event = std.ArrayList(u8).init(allocator) };
        }

        pub fn deinit(self: *Self) void {
            self.event.deinit();
        }

        /// One write on the wire; a failed one means the client left.
        fn put(self: *Self, bytes: []const u8) completion.ClientGone!void {
            self.out.writeAll(bytes) catch return error.ClientGone;
        }

        fn send(self: *Self, kind: []const u8, comptime fmt: []const u8, args: anytype) !void {
            self.event.clearRetainingCapacity();
            try self.event.writer().print("event: {s}\ndata: ", .{kind});
            try self.event.writer().print(fmt, args);
            try self.event.appendSlice("\n\n");
            try self.put(self.event.items);
        }

        fn json(self: *Self, value: []const u8) !std.ArrayList(u8) {
            var buf = std.ArrayList(u8).init(self.event.allocator);
            try std.json.encodeJsonString(value, .{}, buf.writer());
            return buf;
        }

        fn closeBlock(self: *Self) !void {
            if (self.block == null) return;
            if (self.block == .thinking) {
                const signature = self.signature.final();
                try self.send("content_block_delta", "{{\"type\":\"content_block_delta\",\"index\":{d},\"delta\":{{\"type\":\"signature_delta\",\"signature\":\"{s}\"}}}}", .{ self.blocks - 1, signature });
            }
            try self.send("content_block_stop", "{{\"type\":\"content_block_stop\",\"index\":{d}}}", .{self.blocks - 1});
            self.block = null;
        }

        pub fn start(self: *Self, info: completion.Info) !void {
            self.input_tokens = info.prompt_tokens;
            try self.put("Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n\n");
            var model = try self.json(self.model);
            defer model.deinit();
            try self.send("message_start", "{{\"type\":\"message_start\",\"message\":{{\"id\":\"{s}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{s}," ++
                "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{d},\"output_tokens\":0}}}}}}", .{ self.id, model.items, info.prompt_tokens });
            try self.send("ping", "{{\"type\":\"ping\"}}", .{});
        }

        /// The model's thinking: a thinking block, when it was asked for.
        pub fn reasoning(self: *Self, _: u32, bytes: []const u8, _: ?[]const u8) !void {
            if (self.thinking == .hidden) return;
            if (self.block != .thinking) {
                try self.closeBlock();
                try self.send("content_block_start", "{{\"type\":\"content_block_start\",\"index\":{d},\"content_block\":{{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}}}", .{self.blocks});
                self.block = .thinking;
                self.blocks += 1;
                self.signature = .{};
            }
            self.signature.update(bytes);
            if (self.thinking == .omitted) return;
            var t = try self.json(bytes);
            defer t.deinit();
            try self.send("content_block_delta", "{{\"type\":\"content_block_delta\",\"index\":{d},\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":{s}}}}}", .{ self.blocks - 1, t.items });
        }

        pub fn text(self: *Self, _: u32, bytes: []const u8, _: ?[]const u8) !void {
            if (self.block != .text) {
                try self.closeBlock();
                try self.send("content_block_start", "{{\"type\":\"content_block_start\",\"index\":{d},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}", .{self.blocks});
                self.block = .text;
                self.blocks += 1;
            }
            var t = try self.json(bytes);
            defer t.deinit();
            try self.send("content_block_delta", "{{\"type\":\"content_block_delta\",\"index\":{d},\"delta\":{{\"type\":\"text_delta\",\"text\":{s}}}}}", .{ self.blocks - 1, t.items });
        }

        pub fn callStart(self: *Self, _: u32, _: u32, id: []const u8, name: []const u8, _: ?[]const u8) !void {
            try self.closeBlock();
            var n = try self.json(name);
            defer n.deinit();
            var tool_id = std.ArrayList(u8).init(self.event.allocator);
            defer tool_id.deinit();
            try appendToolId(tool_id.writer(), id);
            try self.send("content_block_start", "{{\"type\":\"content_block_start\",\"index\":{d},\"content_block\":{{\"type\":\"tool_use\",\"id\":{s},\"name\":{s},\"input\":{{}}}}}}", .{ self.blocks, tool_id.items, n.items });
            self.block = .tool_use;
            self.blocks += 1;
        }

        pub fn callArguments(self: *Self, _: u32, _: u32, fragment: []const u8, _: ?[]const u8) !void {
            var f = try self.json(fragment);
            defer f.deinit();
            try self.send("content_block_delta", "{{\"type\":\"content_block_delta\",\"index\":{d},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{s}}}}}", .{ self.blocks - 1, f.items });
        }

        pub fn choiceEnd(self: *Self, _: u32, finish: Finish, matched: ?[]const u8, _: ?[]const u8) !void {
            try self.closeBlock();
            const r = stopReason(finish, matched, self.stops);
            self.stop_reason = r.reason;
            self.stop_sequence = r.sequence;
        }

        pub fn end(self: *Self, usage: completion.Usage) !void {
            var seq = try self.json(self.stop_sequence orelse "");
            defer seq.deinit();
            try self.send("message_delta", "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{s}\",\"stop_sequence\":{s}}},\"usage\":{{\"input_tokens\":{d},\"output_tokens\":{d}}}}}", .{
                self.stop_reason, if (self.stop_sequence != null) seq.items else "null", usage.prompt_tokens, usage.completion_tokens,
            });
            try self.send("message_stop", "{{\"type\":\"message_stop\"}}", .{});
        }

        pub fn fail(self: *Self, err: ApiError) !void {
            var body = std.ArrayList(u8).init(self.event.allocator);
            defer body.deinit();
            try appendError(&body, err);
            try self.send("error", "{s}", .{body.items});
        }

        pub fn whole(self: *Self, _: completion.Info, results: []const completion.Choice, usage: completion.Usage) !void {
            const r = results[0];
            var body = std.ArrayList(u8).init(self.event.allocator);
            defer body.deinit();
            const w = body.writer();
            try w.writeAll("Status: 200 OK\nContent-Type: application/json\n\n");
            try w.print("{{\"id\":\"{s}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", .{self.id});
            try std.json.encodeJsonString(self.model, .{}, w);
            try w.writeAll(",\"content\":[");
            var n: usize = 0;
            if (self.thinking != .hidden and r.reasoning.len > 0) {
                var signature = Signature{};
                signature.update(r.reasoning);
                try w.writeAll("{\"type\":\"thinking\",\"thinking\":");
                try std.json.encodeJsonString(if (self.thinking == .shown) r.reasoning else "", .{}, w);
                try w.print(",\"signature\":\"{s}\"}}", .{signature.final()});
                n += 1;
            }
            if (r.content) |c| if (c.len > 0) {
                if (n > 0) try w.writeByte(',');
                try w.writeAll("{\"type\":\"text\",\"text\":");
                try std.json.encodeJsonString(c, .{}, w);
                try w.writeByte('}');
                n += 1;
            };
            for (r.tool_calls) |call| {
                if (n > 0) try w.writeByte(',');
                n += 1;
                try w.writeAll("{\"type\":\"tool_use\",\"id\":");
                try appendToolId(w, call.id);
                try w.writeAll(",\"name\":");
                try std.json.encodeJsonString(call.name, .{}, w);
                // The call reader checked that the arguments are JSON.
                try w.print(",\"input\":{s}}}", .{call.arguments});
            }
            const stop = stopReason(r.finish, r.stop_sequence, self.stops);
            try w.print("],\"stop_reason\":\"{s}\",\"stop_sequence\":", .{stop.reason});
            if (stop.sequence) |s| try std.json.encodeJsonString(s, .{}, w) else try w.writeAll("null");
            try w.print(",\"usage\":{{\"input_tokens\":{d},\"output_tokens\":{d}}}}}", .{ usage.prompt_tokens, usage.completion_tokens });
            try self.put(body.items);
        }
    };
}

const testing = std.testing;
const FakeBackend = shared.test_support.FakeBackend;
const expectInOrder = shared.test_support.expectInOrder;
const Config = completion.Config;
const test_cfg = @import("../chat/tests.zig").test_cfg;
const call_tokens = @import("../chat/tests.zig").call_tokens;

test "stop reasons: a client's stop sequence, the model's end, the limit, a tool call" {
    const stops = [_][]const u8{"END"};
    try testing.expectEqualStrings("stop_sequence", stopReason(.stop, "END", &stops).reason);
    try testing.expectEqualStrings("end_turn", stopReason(.stop, "<|im_end|>", &stops).reason);
    try testing.expectEqualStrings("end_turn", stopReason(.stop, null, &stops).reason);
    try testing.expectEqualStrings("max_tokens", stopReason(.length, null, &stops).reason);
    try testing.expectEqualStrings("tool_use", stopReason(.tool_calls, null, &stops).reason);
}

test "errors in Anthropic's shape" {
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendError(&out, .{ .status = 404, .message = "no \"m\"" });
    try testing.expectEqualStrings("{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"no \\\"m\\\"\"}}", out.items);
}

test "the signature is the SHA-256 of the thinking, however it was cut" {
    var whole = Signature{};
    whole.update("abc");
    var pieces = Signature{};
    pieces.update("a");
    pieces.update("bc");
    const expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    try testing.expectEqualStrings(expected, &whole.final());
    try testing.expectEqualStrings(expected, &pieces.final());
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

/// Runs an Anthropic request on the fake backend, streamed or whole.
fn runAnthropic(backend: *FakeBackend, body: []const u8, cfg: Config, out: *std.ArrayList(u8)) !void {
    var diag = Diagnostic{};
    var parsed = try request.parseRequest(testing.allocator, body, .messages, &diag);
    defer parsed.deinit();
    var output = Output(@TypeOf(out.writer())).init(testing.allocator, out.writer(), "msg_1", "tiny", parsed.chat.stop, parsed.thinking);
    defer output.deinit();
    try completion.generate(testing.allocator, backend, &output, &parsed.chat, cfg, &diag);
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
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    const body = "{\"model\":\"tiny\",\"max_tokens\":20,\"system\":\"S\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";
    var diag = Diagnostic{};
    var parsed = try request.parseRequest(testing.allocator, body, .count_tokens, &diag);
    defer parsed.deinit();
    const counted = try @import("../chat/prompt.zig").countPromptTokens(testing.allocator, &backend, &parsed.chat, test_cfg, &diag);
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
