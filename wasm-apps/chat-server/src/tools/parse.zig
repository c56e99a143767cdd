//! Function calling, reading calls: the calls in a choice's text, in the
//! format the model writes (the JSON forms here, the markup forms in
//! markup.zig), both from the whole text and from text still growing.

const std = @import("std");
const formats = @import("formats.zig");
const scan = @import("scan.zig");
const markup = @import("markup.zig");

const Format = formats.Format;
const Tool = @import("shared").templates.Tool;
const Scanner = scan.Scanner;
const Call = scan.Call;
const skipWs = scan.skipWs;
const validJson = scan.validJson;
const hermes_open = formats.hermes_open;
const hermes_close = formats.hermes_close;
const mistral_open = formats.mistral_open;
const python_tag = formats.python_tag;
const generic_key = formats.generic_key;

pub const Parsed = struct {
    /// The text outside calls. With calls, or before the end, trailing
    /// whitespace is left out (it may precede a call).
    content: []const u8,
    calls: []Call,
};

/// Reads `text` in `format`. `final`: the text is all there is; a call that
/// cannot be read then makes the whole text content. Otherwise the result
/// covers what is certain so far: text that may begin a call is held back,
/// and the last call may be partial. `bare`: the output was constrained to a
/// call, so a bare JSON call without the format's markup counts too (a host
/// that applies the schema but not `grammar-prefix`). Allocates in `arena`.
pub fn parse(arena: std.mem.Allocator, format: Format, text: []const u8, final: bool) !Parsed {
    return parseOpts(arena, format, text, final, false);
}

pub fn parseOpts(arena: std.mem.Allocator, format: Format, text: []const u8, final: bool, bare: bool) !Parsed {
    return parseWith(arena, format, text, final, bare, &.{});
}

/// `parseOpts` knowing the request's tools: the XML format's parameter
/// values are typed by each function's schema (see `Scanner.appendTyped`).
pub fn parseWith(arena: std.mem.Allocator, format: Format, text: []const u8, final: bool, bare: bool, tool_list: []const Tool) !Parsed {
    var s = Scanner{ .arena = arena, .text = text, .final = final, .tools = tool_list, .content = std.ArrayList(u8).init(arena), .calls = std.ArrayList(Call).init(arena) };
    const starts_bare = bare and format != .llama3 and format != .generic and startsWithJson(text);
    const outcome: Scanner.Stop!void = if (starts_bare) leadingJson(&s, true) else switch (format) {
        .hermes => hermes(&s),
        .qwen_xml => markup.qwenXml(&s),
        .gemma4 => markup.gemma4(&s),
        .mistral => mistral(&s),
        .llama3, .generic => leadingJson(&s, format == .generic),
    };
    outcome catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        // Partial text: what was read so far stands.
        error.Incomplete => if (final) return whole(text),
        error.Invalid => if (final) return whole(text),
    };
    if (final) {
        for (s.calls.items) |*c| {
            if (c.name == null or !c.complete) return whole(text);
            if (c.arguments.len == 0) c.arguments = "{}";
            if (!validJson(arena, c.arguments)) return whole(text);
        }
    }
    var content: []const u8 = s.content.items;
    if (!final or s.calls.items.len > 0) content = std.mem.trimRight(u8, content, " \t\r\n");
    return .{ .content = content, .calls = s.calls.items };
}

fn startsWithJson(text: []const u8) bool {
    const i = skipWs(text, 0);
    return i < text.len and (text[i] == '{' or text[i] == '[');
}

fn whole(text: []const u8) Parsed {
    return .{ .content = text, .calls = &.{} };
}

/// `<tool_call>{...}</tool_call>`, anywhere, any number of times.
fn hermes(s: *Scanner) Scanner.Stop!void {
    var pos: usize = 0;
    while (true) {
        const at = std.mem.indexOfPos(u8, s.text, pos, hermes_open) orelse return s.plain(pos, hermes_open);
        try s.content.appendSlice(s.text[pos..at]);
        pos = try s.closing(try s.callObject(at + hermes_open.len), hermes_close);
    }
}

/// `[TOOL_CALLS]` and a JSON list of calls. `[TOOL_CALLS]` is a control
/// token that a host may leave out of the text: a list of calls at the
/// very start counts too.
fn mistral(s: *Scanner) Scanner.Stop!void {
    const first = skipWs(s.text, 0);
    if (first < s.text.len and s.text[first] == '[' and !std.mem.startsWith(u8, s.text[first..], mistral_open)) {
        const after = skipWs(s.text, first + 1);
        if (after == s.text.len and !s.final) return error.Incomplete;
        if (after < s.text.len and s.text[after] == '{') {
            const end = s.callList(first) catch |err| return s.notACall(err);
            return s.plain(end, "");
        }
    }
    var pos: usize = 0;
    while (true) {
        const at = std.mem.indexOfPos(u8, s.text, pos, mistral_open) orelse return s.plain(pos, mistral_open);
        try s.content.appendSlice(s.text[pos..at]);
        pos = try s.callList(at + mistral_open.len);
    }
}

/// Llama 3.x: calls are bare JSON objects at the start (after an optional
/// `<|python_tag|>`), separated by `;` or whitespace. Generic: the same,
/// or one `{"tool_calls": [...]}` object.
fn leadingJson(s: *Scanner, generic: bool) Scanner.Stop!void {
    var i = skipWs(s.text, 0);
    if (std.mem.startsWith(u8, s.text[i..], python_tag)) {
        i = skipWs(s.text, i + python_tag.len);
    } else if (!s.final and i < s.text.len and std.mem.startsWith(u8, python_tag, s.text[i..])) {
        return error.Incomplete;
    }
    if (i == s.text.len) return if (s.final) s.plain(0, "") else error.Incomplete;
    if (generic and s.text[i] == '[') {
        const end = s.callList(i) catch |err| return s.notACall(err);
        return s.plain(end, "");
    }
    if (s.text[i] != '{') return s.plain(0, "");
    if (if (generic) isWrapper(s.text, i) else null) |list_at| {
        const end = s.callList(list_at) catch |err| return s.notACall(err);
        const close = skipWs(s.text, end);
        if (close == s.text.len) return if (s.final) error.Invalid else error.Incomplete;
        if (s.text[close] != '}') return error.Invalid;
        return s.plain(close + 1, "");
    }
    while (true) {
        const end = s.callObject(i) catch |err| return s.notACall(err);
        i = skipWs(s.text, end);
        if (i < s.text.len and s.text[i] == ';') i = skipWs(s.text, i + 1);
        if (i < s.text.len and s.text[i] == '{') continue;
        return s.plain(i, "");
    }
}

/// `{ "tool_calls" :` at `i`: the index of the value after it.
fn isWrapper(text: []const u8, i: usize) ?usize {
    var j = skipWs(text, i + 1);
    if (!std.mem.startsWith(u8, text[j..], generic_key)) return null;
    j = skipWs(text, j + generic_key.len);
    if (j >= text.len or text[j] != ':') return null;
    return j + 1;
}

const testing = std.testing;

test "a malformed call is returned as content" {
    const bad = [_][]const u8{
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1,}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}\n",
        "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
        "<tool_call>not json</tool_call>",
    };
    for (bad) |text| try expectContent(.hermes, text);
    try expectContent(.mistral, "[TOOL_CALLS] [{\"name\": \"f\"");
    try expectContent(.llama3, "{\"name\": \"f\", \"parameters\": {\"a\": tru}}");
}

fn expectContent(format: Format, text: []const u8) !void {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const parsed = try parse(arena.allocator(), format, text, true);
    try testing.expectEqual(@as(usize, 0), parsed.calls.len);
    try testing.expectEqualStrings(text, parsed.content);
}

test "a constrained call without its markup is still a call" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const p = try parseOpts(arena.allocator(), .hermes, "{\"name\": \"f\", \"arguments\": {\"a\": 1}}", true, true);
    try testing.expectEqual(@as(usize, 1), p.calls.len);
    const m = try parseOpts(arena.allocator(), .mistral, "[{\"name\": \"f\", \"arguments\": {}}]", true, true);
    try testing.expectEqual(@as(usize, 1), m.calls.len);
    // unconstrained, bare JSON from a Hermes model is text
    const t = try parse(arena.allocator(), .hermes, "{\"name\": \"f\", \"arguments\": {}}", true);
    try testing.expectEqual(@as(usize, 0), t.calls.len);
}

test "a malformed qwen xml call is returned as content" {
    const bad = [_][]const u8{
        // a parameter never closed
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n</function>\n</tool_call>",
        // no name
        "<tool_call>\n<function=>\n</function>\n</tool_call>",
        // a tag broken by a newline
        "<tool_call>\n<function=f\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>",
        // text where a parameter belongs
        "<tool_call>\n<function=f>\nstray\n</function>\n</tool_call>",
        // cut off
        "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n",
        "<tool_call>\n<func",
        "<tool_call>\nnot a call\n</tool_call>",
    };
    for (bad) |text| try expectContent(.qwen_xml, text);
}

test "a malformed gemma 4 call is returned as content" {
    const bad = [_][]const u8{
        "<|tool_call>call:f{a:<|\"|>x}<tool_call|>",
        "<|tool_call>call:{a:1}<tool_call|>",
        "<|tool_call>call:f{a 1}<tool_call|>",
        "<|tool_call>call:f{a:1 b:2}<tool_call|>",
        "<|tool_call>hello<tool_call|>",
        "<|tool_call>call:f{a:1",
    };
    for (bad) |text| try expectContent(.gemma4, text);
}

test "a constrained call whose control-token markers the host left out is still a call" {
    // Gemma 4's `<|tool_call>` is a control token: the text holds only the grammar's JSON body
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    for ([_]Format{ .gemma4, .qwen_xml }) |format| {
        const p = try parseOpts(arena.allocator(), format, "{\"name\": \"f\", \"arguments\": {\"a\": 1}}", true, true);
        try testing.expectEqual(@as(usize, 1), p.calls.len);
        try testing.expectEqualStrings("{\"a\": 1}", p.calls[0].arguments);
        // unconstrained, it is text
        const t = try parse(arena.allocator(), format, "{\"name\": \"f\", \"arguments\": {}}", true);
        try testing.expectEqual(@as(usize, 0), t.calls.len);
    }
}
