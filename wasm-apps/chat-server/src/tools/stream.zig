//! Function calling, streaming: a choice's growing text turned into deltas
//! (content, each call's id and name, its arguments as they are generated),
//! and the whole result at the end. Its tests read every format both whole
//! and streamed in pieces.

const std = @import("std");
const shared = @import("shared");
const formats = @import("formats.zig");
const parse_mod = @import("parse.zig");

const Format = formats.Format;
const Tool = shared.templates.Tool;
const ToolCall = shared.templates.ToolCall;
const Call = @import("scan.zig").Call;
const Parsed = parse_mod.Parsed;
const parseWith = parse_mod.parseWith;

/// Call ids: `call_` and 24 letters or digits, as OpenAI's.
pub const CallId = struct {
    buf: [32]u8 = undefined,
    len: usize = 0,

    pub fn new() CallId {
        const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        var id = CallId{};
        const prefix = "call_";
        @memcpy(id.buf[0..prefix.len], prefix);
        var raw: [24]u8 = undefined;
        std.crypto.random.bytes(&raw);
        for (raw, 0..) |b, i| id.buf[prefix.len + i] = alphabet[b % alphabet.len];
        id.len = prefix.len + raw.len;
        return id;
    }

    /// A model's own id when it is Mistral's kind (9 letters or digits).
    pub fn from(given: ?[]const u8) CallId {
        if (given) |g| if (g.len == 9 and allAlphanumeric(g)) {
            var id = CallId{ .len = 9 };
            @memcpy(id.buf[0..9], g);
            return id;
        };
        return new();
    }

    pub fn slice(self: *const CallId) []const u8 {
        return self.buf[0..self.len];
    }
};

fn allAlphanumeric(text: []const u8) bool {
    for (text) |c| if (!std.ascii.isAlphanumeric(c)) return false;
    return true;
}

/// Turns the growing text of one choice into deltas: content, the start of
/// each call (id and name), and its arguments as they are generated. Each
/// step re-reads the whole text and sends what is new since the last step,
/// so the streamed result is the one `finish` reads from the whole text.
///
/// `sink` has `text(bytes)`, `callStart(index, id, name)` and
/// `callArguments(index, fragment)`.
pub const Stream = struct {
    allocator: std.mem.Allocator,
    format: Format,
    /// Only the first call counts (parallel_tool_calls false).
    single: bool,
    /// Generation was constrained to a call (see parse.zig's `parseOpts`).
    bare: bool = false,
    /// The request's tools, to type the XML format's values (see `parseWith`).
    tools: []const Tool = &.{},
    text: std.ArrayListUnmanaged(u8) = .empty,
    content_sent: usize = 0,
    /// Per started call: its id and how much of its arguments went out.
    started: std.ArrayListUnmanaged(struct { id: CallId, args_sent: usize }) = .empty,

    pub fn init(allocator: std.mem.Allocator, format: Format, single: bool) Stream {
        return .{ .allocator = allocator, .format = format, .single = single };
    }

    pub fn deinit(self: *Stream) void {
        self.text.deinit(self.allocator);
        self.started.deinit(self.allocator);
    }

    /// Adds released text and sends what became certain.
    pub fn push(self: *Stream, piece: []const u8, sink: anytype) !void {
        if (piece.len == 0) return;
        try self.text.appendSlice(self.allocator, piece);
        var arena = std.heap.ArenaAllocator.init(self.allocator);
        defer arena.deinit();
        const parsed = try parseWith(arena.allocator(), self.format, self.text.items, false, self.bare, self.tools);
        try self.send(parsed, sink);
    }

    /// Adds text without reading it yet (a whole response is read once, at the end).
    pub fn append(self: *Stream, piece: []const u8) !void {
        try self.text.appendSlice(self.allocator, piece);
    }

    pub const Result = struct {
        /// null when there are calls and no other text.
        content: ?[]const u8,
        calls: []ToolCall,
    };

    /// The end of the text: sends the rest and returns the whole result,
    /// allocated in `arena`.
    pub fn finish(self: *Stream, arena: std.mem.Allocator, sink: anytype) !Result {
        const parsed = try parseWith(arena, self.format, self.text.items, true, self.bare, self.tools);
        try self.send(parsed, sink);
        const calls = try arena.alloc(ToolCall, self.count(parsed.calls));
        for (calls, 0..) |*c, i| {
            const id = if (i < self.started.items.len) self.started.items[i].id else CallId.from(parsed.calls[i].id);
            c.* = .{ .id = try arena.dupe(u8, id.slice()), .name = parsed.calls[i].name.?, .arguments = parsed.calls[i].arguments };
        }
        const content: ?[]const u8 = if (calls.len > 0 and parsed.content.len == 0) null else parsed.content;
        return .{ .content = content, .calls = calls };
    }

    fn count(self: *const Stream, calls: []const Call) usize {
        return if (self.single) @min(calls.len, 1) else calls.len;
    }

    fn send(self: *Stream, parsed: Parsed, sink: anytype) !void {
        if (parsed.content.len > self.content_sent and self.content_sent <= parsed.content.len) {
            try sink.text(parsed.content[self.content_sent..]);
            self.content_sent = parsed.content.len;
        }
        const calls = parsed.calls[0..self.count(parsed.calls)];
        for (calls, 0..) |c, i| {
            if (i == self.started.items.len) {
                const name = c.name orelse return;
                // Mistral writes its id after the arguments: wait for the whole call.
                if (self.format == .mistral and c.id == null and !c.complete) return;
                const id = CallId.from(c.id);
                try self.started.append(self.allocator, .{ .id = id, .args_sent = 0 });
                try sink.callStart(@intCast(i), self.started.items[i].id.slice(), name);
            }
            if (c.arguments_quoted and !c.complete) return;
            const entry = &self.started.items[i];
            if (c.arguments.len > entry.args_sent) {
                try sink.callArguments(@intCast(i), c.arguments[entry.args_sent..]);
                entry.args_sent = c.arguments.len;
            }
            if (!c.complete) return;
        }
    }
};

const testing = std.testing;
const weather_tool = @import("grammar.zig").weather_tool;

/// A sink that records the deltas as text: `T:...`, `S0:id:name`, `A0:...`.
const Recorder = struct {
    events: std.ArrayList(u8),
    content: std.ArrayList(u8),
    args: [4]std.ArrayList(u8),
    names: [4]std.BoundedArray(u8, 64) = .{ .{}, .{}, .{}, .{} },
    starts: usize = 0,

    fn init() Recorder {
        return .{ .events = std.ArrayList(u8).init(testing.allocator), .content = std.ArrayList(u8).init(testing.allocator), .args = .{
            std.ArrayList(u8).init(testing.allocator), std.ArrayList(u8).init(testing.allocator),
            std.ArrayList(u8).init(testing.allocator), std.ArrayList(u8).init(testing.allocator),
        } };
    }

    fn deinit(self: *Recorder) void {
        self.events.deinit();
        self.content.deinit();
        for (&self.args) |*a| a.deinit();
    }

    pub fn text(self: *Recorder, bytes: []const u8) !void {
        try self.content.appendSlice(bytes);
        try self.events.writer().print("T:{s}|", .{bytes});
    }

    pub fn callStart(self: *Recorder, index: u32, id: []const u8, name: []const u8) !void {
        try testing.expectEqual(self.starts, index);
        self.starts += 1;
        try self.names[index].appendSlice(name);
        try testing.expect(std.mem.startsWith(u8, id, "call_") or id.len == 9);
        try self.events.writer().print("S{d}:{s}|", .{ index, name });
    }

    pub fn callArguments(self: *Recorder, index: u32, fragment: []const u8) !void {
        try testing.expect(index < self.starts);
        try self.args[index].appendSlice(fragment);
        try self.events.writer().print("A{d}|", .{index});
    }
};

/// Streams `text` in pieces of `step` bytes, then checks that the stream
/// assembled the same result as the final parse.
fn streamInPieces(format: Format, text: []const u8, step: usize, rec: *Recorder, single: bool) !Stream.Result {
    return streamInPiecesWith(format, &.{}, text, step, rec, single);
}

fn streamInPiecesWith(format: Format, tool_list: []const Tool, text: []const u8, step: usize, rec: *Recorder, single: bool) !Stream.Result {
    var s = Stream.init(testing.allocator, format, single);
    s.tools = tool_list;
    defer s.deinit();
    var i: usize = 0;
    while (i < text.len) : (i += step) try s.push(text[i..@min(text.len, i + step)], rec);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), rec);
    try testing.expectEqualStrings(result.content orelse "", rec.content.items);
    try testing.expectEqual(result.calls.len, rec.starts);
    for (result.calls, 0..) |c, j| {
        try testing.expectEqualStrings(c.name, rec.names[j].slice());
        try testing.expectEqualStrings(c.arguments, rec.args[j].items);
    }
    return .{ .content = if (result.content) |c| try testing.allocator.dupe(u8, c) else null, .calls = &.{} };
}

fn expectCalls(format: Format, text: []const u8, content: ?[]const u8, names: []const []const u8, args: []const []const u8) !void {
    return expectCallsWith(format, &.{}, text, content, names, args);
}

fn expectCallsWith(format: Format, tool_list: []const Tool, text: []const u8, content: ?[]const u8, names: []const []const u8, args: []const []const u8) !void {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const parsed = try parseWith(arena.allocator(), format, text, true, false, tool_list);
    try testing.expectEqual(names.len, parsed.calls.len);
    for (parsed.calls, names, args) |c, n, a| {
        try testing.expectEqualStrings(n, c.name.?);
        try testing.expectEqualStrings(a, c.arguments);
    }
    if (content) |expected| try testing.expectEqualStrings(expected, parsed.content) else try testing.expectEqual(@as(usize, 0), parsed.content.len);
    // and the same when streamed in 1, 2 and 3 byte pieces
    for ([_]usize{ 1, 2, 3, 7 }) |step| {
        var rec = Recorder.init();
        defer rec.deinit();
        const r = try streamInPiecesWith(format, tool_list, text, step, &rec, false);
        defer if (r.content) |c| testing.allocator.free(c);
        try testing.expectEqual(names.len, rec.starts);
        for (args, 0..) |a, j| try testing.expectEqualStrings(a, rec.args[j].items);
    }
}

test "hermes calls, one and several, with text before" {
    try expectCalls(.hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", null, &.{"get_weather"}, &.{"{\"city\": \"Paris\"}"});
    try expectCalls(.hermes, "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": \"}\"}]}}\n</tool_call>\n<tool_call>\n{\"arguments\": {}, \"name\": \"b\"}\n</tool_call>\n", "Let me check.", &.{ "a", "b" }, &.{ "{\"x\": [1, {\"y\": \"}\"}]}", "{}" });
}

test "llama 3 bare JSON with parameters or arguments, and the python tag" {
    try expectCalls(.llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", null, &.{"get_weather"}, &.{"{\"city\": \"Oslo\"}"});
    try expectCalls(.llama3, "<|python_tag|>{\"name\": \"f\", \"arguments\": {\"q\": 1}}; {\"name\": \"g\", \"parameters\": {}}", null, &.{ "f", "g" }, &.{ "{\"q\": 1}", "{}" });
    // JSON that is not a call is content
    try expectCalls(.llama3, "{\"answer\": 42}", "{\"answer\": 42}", &.{}, &.{});
    try expectCalls(.llama3, "The answer is 42.", "The answer is 42.", &.{}, &.{});
}

test "mistral calls keep the model's 9-character ids" {
    const text = "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}, \"id\": \"abcDEF123\"}, {\"name\": \"g\", \"arguments\": {}}]";
    try expectCalls(.mistral, text, null, &.{ "f", "g" }, &.{ "{\"a\": \"b\"}", "{}" });
    var rec = Recorder.init();
    defer rec.deinit();
    var s = Stream.init(testing.allocator, .mistral, false);
    defer s.deinit();
    for (text) |c| try s.push(&.{c}, &rec);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), &rec);
    try testing.expectEqualStrings("abcDEF123", result.calls[0].id);
    try testing.expect(std.mem.startsWith(u8, result.calls[1].id, "call_") and result.calls[1].id.len == 29);
}

test "mistral calls without the control token" {
    try expectCalls(.mistral, " [{\"name\": \"f\", \"arguments\": {\"a\": 1}}]", null, &.{"f"}, &.{"{\"a\": 1}"});
    try expectCalls(.mistral, "[1, 2] are numbers", "[1, 2] are numbers", &.{}, &.{});
}

test "generic JSON calls, wrapped or bare" {
    try expectCalls(.generic, "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {\"n\": 2}}, {\"name\": \"g\", \"arguments\": {}}]}", null, &.{ "f", "g" }, &.{ "{\"n\": 2}", "{}" });
    try expectCalls(.generic, " {\"name\": \"f\", \"arguments\": {\"n\": 2}}", null, &.{"f"}, &.{"{\"n\": 2}"});
    try expectCalls(.generic, "Hello there", "Hello there", &.{}, &.{});
}

test "arguments written as a JSON string are decoded" {
    try expectCalls(.hermes, "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>", null, &.{"f"}, &.{"{\"a\": 1}"});
}

test "streamed arguments arrive as they are generated, not at the end" {
    var rec = Recorder.init();
    defer rec.deinit();
    var s = Stream.init(testing.allocator, .hermes, false);
    defer s.deinit();
    const text = "Sure<tool_call>\n{\"name\": \"f\", \"arguments\": {\"long\": \"aaaaaaaaaaaaaaaa\"}}\n</tool_call>";
    for (text) |c| try s.push(&.{c}, &rec);
    // many argument fragments went out before the end
    try testing.expect(std.mem.count(u8, rec.events.items, "A0|") > 10);
    // the text went out before the call began, the call before its arguments
    try testing.expect(std.mem.lastIndexOf(u8, rec.events.items, "T:").? < std.mem.indexOf(u8, rec.events.items, "S0:f|").?);
    try testing.expect(std.mem.indexOf(u8, rec.events.items, "S0:f|").? < std.mem.indexOf(u8, rec.events.items, "A0|").?);
    try testing.expect(std.mem.indexOf(u8, rec.events.items, "<tool") == null);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), &rec);
    try testing.expectEqualStrings("{\"long\": \"aaaaaaaaaaaaaaaa\"}", rec.args[0].items);
    try testing.expectEqualStrings("Sure", result.content.?);
}

test "text that only looked like a call marker is released" {
    var rec = Recorder.init();
    defer rec.deinit();
    const r = try streamInPieces(.hermes, "a <tool b", 1, &rec, false);
    defer if (r.content) |c| testing.allocator.free(c);
    try testing.expectEqualStrings("a <tool b", r.content.?);
}

test "parallel_tool_calls false keeps the first call" {
    var rec = Recorder.init();
    defer rec.deinit();
    var s = Stream.init(testing.allocator, .hermes, true);
    defer s.deinit();
    try s.push("<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call><tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>", &rec);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), &rec);
    try testing.expectEqual(@as(usize, 1), result.calls.len);
    try testing.expectEqual(@as(usize, 1), rec.starts);
}

test "qwen xml calls: parameters become a JSON object typed by the schema" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const tool_list = [_]Tool{try shared.test_support.toolFrom(arena.allocator(), weather_tool)};
    // as the Qwen3.5 template writes calls: one value per parameter, between newlines
    try expectCallsWith(.qwen_xml, &tool_list, "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n" ++
        "<parameter=zip>\n10001\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n<parameter=where>\n{\"lat\": 1.5}\n</parameter>\n" ++
        "<parameter=tags>\n[\"a\", \"b\"]\n</parameter>\n</function>\n</tool_call>", null, &.{"get_weather"}, &.{"{\"city\": \"New York\", \"days\": 3, \"zip\": \"10001\", \"metric\": true, \"where\": {\"lat\": 1.5}, \"tags\": [\"a\", \"b\"]}"});
    // text before, two calls, a multi-line string holding markup-like text, no parameters
    try expectCallsWith(.qwen_xml, &tool_list, "Checking both.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nline one\n<b> & \"two\"\n</parameter>\n</function>\n</tool_call>\n" ++
        "<tool_call>\n<function=get_time>\n</function>\n</tool_call>", "Checking both.", &.{ "get_weather", "get_time" }, &.{ "{\"city\": \"line one\\n<b> & \\\"two\\\"\"}", "{}" });
    // indented, as llama.cpp's tests write it; an empty value is an empty string
    try expectCallsWith(.qwen_xml, &tool_list, "<tool_call>\n  <function=get_weather>\n    <parameter=city>\n      John Doe\n    </parameter>\n    <parameter=zip>\n    </parameter>\n" ++
        "    <parameter=days>\n      -3\n    </parameter>\n  </function>\n</tool_call>", null, &.{"get_weather"}, &.{"{\"city\": \"John Doe\", \"zip\": \"\", \"days\": -3}"});
    // without a schema: JSON values stay JSON, anything else is a string
    try expectCalls(.qwen_xml, "<tool_call>\n<function=f>\n<parameter=n>\n10001\n</parameter>\n<parameter=s>\nhi there\n</parameter>\n</function>\n</tool_call>", null, &.{"f"}, &.{"{\"n\": 10001, \"s\": \"hi there\"}"});
    // a Hermes JSON body (what the grammar holds a required call to) is read too
    try expectCalls(.qwen_xml, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>", null, &.{"f"}, &.{"{\"a\": 1}"});
}

test "streamed qwen xml calls start at the name and grow by whole parameters" {
    var rec = Recorder.init();
    defer rec.deinit();
    var s = Stream.init(testing.allocator, .qwen_xml, false);
    defer s.deinit();
    const head = "Sure\n<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\nx";
    for (head) |c| try s.push(&.{c}, &rec);
    // the call started, with the first parameter, before the call is whole
    try testing.expectEqual(@as(usize, 1), rec.starts);
    try testing.expectEqualStrings("{\"a\": 1", rec.args[0].items);
    try testing.expectEqualStrings("Sure", rec.content.items);
    try testing.expect(std.mem.indexOf(u8, rec.events.items, "<tool") == null);
    try s.push("yz\n</parameter>\n</function>\n</tool_call>", &rec);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), &rec);
    try testing.expectEqualStrings("{\"a\": 1, \"b\": \"xyz\"}", rec.args[0].items);
    try testing.expectEqualStrings("{\"a\": 1, \"b\": \"xyz\"}", result.calls[0].arguments);
    try testing.expectEqualStrings("Sure", result.content.?);
}

test "gemma 4 calls: the object with bare keys and <|\"|> strings becomes JSON" {
    try expectCalls(.gemma4, "<|tool_call>call:get_weather{city:<|\"|>Paris, \"FR\"<|\"|>,days:3,metric:true,where:{lat:1.5,name:<|\"|>x}y<|\"|>}," ++
        "tags:[<|\"|>a<|\"|>,<|\"|>b<|\"|>],note:None}<tool_call|>", null, &.{"get_weather"}, &.{"{\"city\": \"Paris, \\\"FR\\\"\", \"days\": 3, \"metric\": true, \"where\": {\"lat\":1.5,\"name\":\"x}y\"}, \"tags\": [\"a\",\"b\"], \"note\": null}"});
    // text before, two calls, no arguments
    try expectCalls(.gemma4, "Both, then.<|tool_call>call:f{q:<|\"|>one<|\"|>}<tool_call|><|tool_call>call:g{}<tool_call|>", "Both, then.", &.{ "f", "g" }, &.{ "{\"q\": \"one\"}", "{}" });
    // a Hermes JSON body (what the grammar holds a required call to) is read too
    try expectCalls(.gemma4, "<|tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}<tool_call|>", null, &.{"f"}, &.{"{\"a\": 1}"});
    try expectCalls(.gemma4, "No call: <|tool is not a marker", "No call: <|tool is not a marker", &.{}, &.{});
}

test "streamed gemma 4 calls start at the name and grow by whole pairs" {
    var rec = Recorder.init();
    defer rec.deinit();
    var s = Stream.init(testing.allocator, .gemma4, false);
    defer s.deinit();
    for ("Ok<|tool_call>call:f{a:1,b:<|\"|>x") |c| try s.push(&.{c}, &rec);
    try testing.expectEqual(@as(usize, 1), rec.starts);
    try testing.expectEqualStrings("{\"a\": 1", rec.args[0].items);
    try testing.expectEqualStrings("Ok", rec.content.items);
    try s.push("y<|\"|>}<tool_call|>", &rec);
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const result = try s.finish(arena.allocator(), &rec);
    try testing.expectEqualStrings("{\"a\": 1, \"b\": \"xy\"}", result.calls[0].arguments);
    try testing.expectEqualStrings("{\"a\": 1, \"b\": \"xy\"}", rec.args[0].items);
}
