//! Function calling, the calls written in markup rather than JSON: the XML
//! form of Qwen3-Coder and Qwen3.5 (`<function=NAME>` and its
//! `<parameter=KEY>`s) and Gemma 4's (`call:NAME{key:value,..}`), each
//! turned into a call with JSON arguments as it is read.

const std = @import("std");
const formats = @import("formats.zig");
const scan = @import("scan.zig");

const Scanner = scan.Scanner;
const skipWs = scan.skipWs;
const validJson = scan.validJson;
const hermes_open = formats.hermes_open;
const hermes_close = formats.hermes_close;
const xml_function = formats.xml_function;
const xml_function_close = formats.xml_function_close;
const xml_parameter = formats.xml_parameter;
const xml_parameter_close = formats.xml_parameter_close;
const gemma_open = formats.gemma_open;
const gemma_close = formats.gemma_close;
const gemma_call = formats.gemma_call;
const gemma_quote = formats.gemma_quote;

/// `<tool_call>` holding `<function=NAME>` and its `<parameter=KEY>`s, or
/// a Hermes JSON body; anywhere, any number of times.
pub fn qwenXml(s: *Scanner) Scanner.Stop!void {
    return markedCalls(s, hermes_open, hermes_close, xml_function, readXmlCall);
}

/// `<|tool_call>call:NAME{..}<tool_call|>` or `<|tool_call>` with a Hermes
/// JSON body; anywhere, any number of times.
pub fn gemma4(s: *Scanner) Scanner.Stop!void {
    return markedCalls(s, gemma_open, gemma_close, gemma_call, readGemmaCall);
}

/// Calls between `open` and `close`, each a Hermes JSON body or, after
/// `lead`, the format's own form read by `read` (see Scanner.readCallWith).
fn markedCalls(
    s: *Scanner,
    comptime open: []const u8,
    comptime close: []const u8,
    comptime lead: []const u8,
    comptime read: fn (*Scanner, usize, usize) Scanner.Stop!usize,
) Scanner.Stop!void {
    var pos: usize = 0;
    while (true) {
        const at = std.mem.indexOfPos(u8, s.text, pos, open) orelse return s.plain(pos, open);
        try s.content.appendSlice(s.text[pos..at]);
        var i = skipWs(s.text, at + open.len);
        const body = s.text[i..];
        if (body.len > 0 and body[0] == '{') {
            i = try s.callObject(i);
        } else if (std.mem.startsWith(u8, body, lead)) {
            i = try s.readCallWith(i, read);
        } else if (std.mem.startsWith(u8, lead, body)) {
            return error.Incomplete;
        } else return error.Invalid;
        pos = try s.closing(i, close);
    }
}

/// `<function=NAME>`, parameters, `</function>` at `start`; the call is
/// recorded once its name is whole, and its arguments (a JSON object
/// built from the parameters) grow by whole parameters. Returns the
/// index after it.
fn readXmlCall(s: *Scanner, start: usize, index: usize) Scanner.Stop!usize {
    const name_start = start + xml_function.len;
    const name_end = try tagEnd(s.text, name_start);
    const name = std.mem.trim(u8, s.text[name_start..name_end], " ");
    if (name.len == 0) return error.Invalid;
    try s.calls.append(.{ .name = name });
    const props = properties(s, name);
    var args = std.ArrayList(u8).init(s.arena);
    try args.append('{');
    var i = name_end + 1;
    while (true) {
        s.calls.items[index].arguments = args.items;
        i = skipWs(s.text, i);
        const rest = s.text[i..];
        if (std.mem.startsWith(u8, rest, xml_function_close)) {
            try args.append('}');
            s.calls.items[index].arguments = args.items;
            s.calls.items[index].complete = true;
            return i + xml_function_close.len;
        }
        if (std.mem.startsWith(u8, rest, xml_parameter)) {
            const key_start = i + xml_parameter.len;
            const key_end = try tagEnd(s.text, key_start);
            const key = std.mem.trim(u8, s.text[key_start..key_end], " ");
            if (key.len == 0) return error.Invalid;
            const close = std.mem.indexOfPos(u8, s.text, key_end + 1, xml_parameter_close) orelse return error.Incomplete;
            // The template writes each value between newlines; as llama.cpp,
            // the whitespace around a value is not part of it.
            const value = std.mem.trim(u8, s.text[key_end + 1 .. close], " \t\r\n");
            if (args.items.len > 1) try args.appendSlice(", ");
            try std.json.encodeJsonString(key, .{}, args.writer());
            try args.appendSlice(": ");
            try appendTyped(s, &args, value, props, key);
            i = close + xml_parameter_close.len;
            continue;
        }
        if (rest.len == 0) return error.Incomplete;
        if (!s.final and (std.mem.startsWith(u8, xml_function_close, rest) or std.mem.startsWith(u8, xml_parameter, rest))) return error.Incomplete;
        return error.Invalid;
    }
}

/// The `properties` of the named function's parameter schema, if known.
fn properties(s: *Scanner, name: []const u8) ?std.json.ObjectMap {
    for (s.tools) |t| {
        if (!std.mem.eql(u8, t.name, name)) continue;
        const params = objectField(objectField(t.value, "function") orelse return null, "parameters") orelse return null;
        const props = objectField(params, "properties") orelse return null;
        return props.object;
    }
    return null;
}

/// A parameter's value as JSON, as llama.cpp reads this format: a string
/// where the schema types the parameter as one; otherwise the value as
/// it stands when it is JSON (number, boolean, null, object, array),
/// else a string.
fn appendTyped(s: *Scanner, out: *std.ArrayList(u8), value: []const u8, props: ?std.json.ObjectMap, key: []const u8) Scanner.Stop!void {
    const string_typed = if (props) |p| if (p.get(key)) |schema| isStringSchema(schema) else false else false;
    if (!string_typed and value.len > 0 and validJson(s.arena, value)) return out.appendSlice(value);
    try std.json.encodeJsonString(value, .{}, out.writer());
}

/// `call:NAME{key:value,..}` at `start`: the call is recorded once its name
/// is whole, and its arguments (the object as JSON) grow by whole pairs.
fn readGemmaCall(s: *Scanner, start: usize, index: usize) Scanner.Stop!usize {
    const name_start = start + gemma_call.len;
    const brace = std.mem.indexOfAnyPos(u8, s.text, name_start, "{<\n") orelse return error.Incomplete;
    if (s.text[brace] != '{') return error.Invalid;
    const name = std.mem.trim(u8, s.text[name_start..brace], " ");
    if (name.len == 0) return error.Invalid;
    try s.calls.append(.{ .name = name });
    var args = std.ArrayList(u8).init(s.arena);
    try args.append('{');
    var i = brace + 1;
    while (true) {
        s.calls.items[index].arguments = args.items;
        i = skipWs(s.text, i);
        if (i == s.text.len) return error.Incomplete;
        if (s.text[i] == '}') {
            try args.append('}');
            s.calls.items[index].arguments = args.items;
            s.calls.items[index].complete = true;
            return i + 1;
        }
        if (args.items.len > 1) {
            if (s.text[i] != ',') return error.Invalid;
            i = skipWs(s.text, i + 1);
        }
        // Whole pairs only: a cut-off pair adds nothing yet.
        var pair = std.ArrayList(u8).init(s.arena);
        if (args.items.len > 1) try pair.appendSlice(", ");
        i = try gemmaKey(s.text, i, &pair);
        try pair.appendSlice(": ");
        i = try gemmaValue(s.arena, s.text, i, &pair, 0);
        try args.appendSlice(pair.items);
    }
}

/// A Gemma 4 object key at `start` (bare, or between `<|"|>`) and its `:`,
/// written to `out` as a JSON string. Returns the index after the `:`.
fn gemmaKey(text: []const u8, start: usize, out: *std.ArrayList(u8)) Scanner.Stop!usize {
    var i = skipWs(text, start);
    var key: []const u8 = undefined;
    if (std.mem.startsWith(u8, text[i..], gemma_quote)) {
        const end = std.mem.indexOfPos(u8, text, i + gemma_quote.len, gemma_quote) orelse return error.Incomplete;
        key = text[i + gemma_quote.len .. end];
        i = end + gemma_quote.len;
    } else {
        const end = std.mem.indexOfAnyPos(u8, text, i, ":,{}[]<\n") orelse return error.Incomplete;
        key = std.mem.trim(u8, text[i..end], " ");
        i = end;
    }
    if (key.len == 0) return error.Invalid;
    i = skipWs(text, i);
    if (i == text.len) return error.Incomplete;
    if (text[i] != ':') return error.Invalid;
    try std.json.encodeJsonString(key, .{}, out.writer());
    return i + 1;
}

/// A Gemma 4 value at `start` written to `out` as JSON: `<|"|>text<|"|>` a
/// string, `{..}` an object with bare keys, `[..]` a list, a bare word as it
/// stands when it is a JSON number, true, false or null (`None`, as a Python
/// None prints, is null). Returns the index after it.
fn gemmaValue(arena: std.mem.Allocator, text: []const u8, start: usize, out: *std.ArrayList(u8), depth: usize) Scanner.Stop!usize {
    if (depth > 32) return error.Invalid;
    var i = skipWs(text, start);
    if (i == text.len) return error.Incomplete;
    const rest = text[i..];
    if (std.mem.startsWith(u8, rest, gemma_quote)) {
        const end = std.mem.indexOfPos(u8, text, i + gemma_quote.len, gemma_quote) orelse return error.Incomplete;
        try std.json.encodeJsonString(text[i + gemma_quote.len .. end], .{}, out.writer());
        return end + gemma_quote.len;
    }
    if (std.mem.startsWith(u8, gemma_quote, rest)) return error.Incomplete;
    switch (rest[0]) {
        '{', '[' => {
            const object = rest[0] == '{';
            const close: u8 = if (object) '}' else ']';
            try out.append(rest[0]);
            i += 1;
            var first = true;
            while (true) {
                i = skipWs(text, i);
                if (i == text.len) return error.Incomplete;
                if (text[i] == close) {
                    try out.append(close);
                    return i + 1;
                }
                if (!first) {
                    if (text[i] != ',') return error.Invalid;
                    try out.append(',');
                    i += 1;
                }
                first = false;
                if (object) {
                    i = try gemmaKey(text, i, out);
                    try out.append(':');
                }
                i = try gemmaValue(arena, text, i, out, depth + 1);
            }
        },
        else => {
            const end = std.mem.indexOfAnyPos(u8, text, i, ",}]<\n") orelse return error.Incomplete;
            const word = std.mem.trim(u8, text[i..end], " ");
            if (word.len == 0) return error.Invalid;
            if (std.mem.eql(u8, word, "None")) {
                try out.appendSlice("null");
            } else if (word[0] != '"' and word[0] != '{' and word[0] != '[' and validJson(arena, word)) {
                try out.appendSlice(word);
            } else return error.Invalid;
            return end;
        },
    }
}

/// The index of the `>` that ends a tag's name begun at `start`; a tag cut
/// off by the end of the text is incomplete, one broken by a newline or `<`
/// is not a tag.
fn tagEnd(text: []const u8, start: usize) error{ Incomplete, Invalid }!usize {
    const end = std.mem.indexOfAnyPos(u8, text, start, ">\n<") orelse return error.Incomplete;
    return if (text[end] == '>') end else error.Invalid;
}

fn objectField(value: std.json.Value, key: []const u8) ?std.json.Value {
    if (value != .object) return null;
    const field = value.object.get(key) orelse return null;
    return if (field == .object) field else null;
}

fn isStringSchema(schema: std.json.Value) bool {
    if (schema != .object) return false;
    const t = schema.object.get("type") orelse return false;
    return t == .string and std.mem.eql(u8, t.string, "string");
}
