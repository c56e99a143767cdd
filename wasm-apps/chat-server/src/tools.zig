//! Function calling: which format a model writes its calls in, how a model
//! whose template knows no tools is taught one, the grammar that keeps a call
//! well-formed, and reading the calls back out of the generated text, both
//! at the end and while it streams.

const std = @import("std");
const templates = @import("templates.zig");
const openai = @import("openai.zig");

pub const Format = templates.ToolFormat;
const Message = templates.Message;
const Tool = templates.Tool;

// ---------------------------------------------------------------------------
// Formats

const hermes_open = "<tool_call>";
const hermes_close = "</tool_call>";
const mistral_open = "[TOOL_CALLS]";
const python_tag = "<|python_tag|>";
const generic_key = "\"tool_calls\"";
const xml_function = "<function=";
const xml_function_close = "</function>";
const xml_parameter = "<parameter=";
const xml_parameter_close = "</parameter>";
const gemma_open = "<|tool_call>";
const gemma_close = "<tool_call|>";
const gemma_call = "call:";
const gemma_quote = "<|\"|>";

/// The formats' single-token markers, for the host's `preserved-tokens` (a
/// control token is left out of the generated text unless named there).
pub const markers = [_][]const u8{ hermes_open, hermes_close, mistral_open, python_tag, gemma_open, gemma_close, gemma_quote };

/// The format of a prompt that the model's own template rendered with tools.
pub fn detectFormat(prompt: []const u8) Format {
    // Gemma 4's template declares each tool as `<|tool>declaration:NAME{..}<tool|>`.
    if (contains(prompt, "<|tool>declaration:")) return .gemma4;
    // Qwen3.5's and Qwen3-Coder's templates show the XML form in their instructions.
    if (contains(prompt, hermes_open ++ "\n" ++ xml_function)) return .qwen_xml;
    if (contains(prompt, hermes_open)) return .hermes;
    if (contains(prompt, "[AVAILABLE_TOOLS]") or contains(prompt, mistral_open)) return .mistral;
    if (contains(prompt, "<|start_header_id|>")) return .llama3;
    return .generic;
}

/// Whether a template rendered the tools at all: every name is in the prompt.
pub fn mentionsTools(prompt: []const u8, tools: []const Tool) bool {
    for (tools) |t| if (!contains(prompt, t.name)) return false;
    return true;
}

/// The format taught to a model whose template knows no tools: Hermes for a
/// ChatML model (its tags are the most common in fine-tunes), else generic JSON.
pub fn taughtFormat(prompt: []const u8) Format {
    return if (contains(prompt, "<|im_start|>")) .hermes else .generic;
}

fn contains(haystack: []const u8, needle: []const u8) bool {
    return std.mem.indexOf(u8, haystack, needle) != null;
}

// ---------------------------------------------------------------------------
// Teaching a format (templates without tools)

/// The conversation rewritten for a template that knows no tools: the tools
/// and the call format join the system message, past calls become assistant
/// text in that format, results become user turns. Allocates in `arena`.
pub fn teach(arena: std.mem.Allocator, messages: []const Message, tools: []const Tool, format: Format) ![]Message {
    std.debug.assert(format == .hermes or format == .generic);
    var out = std.ArrayList(Message).init(arena);
    var rest = messages;
    if (tools.len > 0) {
        var system = std.ArrayList(u8).init(arena);
        if (rest.len > 0 and rest[0].role == .system) {
            try system.appendSlice(rest[0].content);
            try system.appendSlice("\n\n");
            rest = rest[1..];
        }
        try appendInstructions(system.writer(), tools, format);
        try out.append(.{ .role = .system, .content = system.items });
    }
    for (rest, 0..) |m, i| switch (m.role) {
        .assistant => {
            if (m.tool_calls.len == 0) {
                try out.append(m);
                continue;
            }
            var text = std.ArrayList(u8).init(arena);
            if (m.content.len > 0) {
                try text.appendSlice(m.content);
                try text.append('\n');
            }
            try appendCallsText(text.writer(), m.tool_calls, format);
            try out.append(.{ .role = .assistant, .content = text.items });
        },
        .tool => {
            // Consecutive results share one user turn, as Qwen's template does.
            var text = std.ArrayList(u8).init(arena);
            const merge = i > 0 and rest[i - 1].role == .tool;
            if (merge) {
                try text.appendSlice(out.items[out.items.len - 1].content);
                try text.append('\n');
            }
            switch (format) {
                .hermes => try text.writer().print("<tool_response>\n{s}\n</tool_response>", .{m.content}),
                else => try text.writer().print("Function result ({s}):\n{s}", .{ callName(messages, m.tool_call_id) orelse "unknown", m.content }),
            }
            if (merge) {
                out.items[out.items.len - 1].content = text.items;
            } else try out.append(.{ .role = .user, .content = text.items });
        },
        else => try out.append(m),
    };
    return out.toOwnedSlice();
}

fn callName(messages: []const Message, id: ?[]const u8) ?[]const u8 {
    const want = id orelse return null;
    for (messages) |m| for (m.tool_calls) |c| if (std.mem.eql(u8, c.id, want)) return c.name;
    return null;
}

fn appendInstructions(w: anytype, tools: []const Tool, format: Format) !void {
    switch (format) {
        .hermes => {
            try w.writeAll("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" ++
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
            for (tools) |t| {
                try w.writeByte('\n');
                try templates.writePyJson(w, t.value, null, 0);
            }
            try w.writeAll("\n</tools>\n\nFor each function call, return a json object with function name and arguments " ++
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        },
        else => {
            try w.writeAll("You can call functions to answer. These are the functions, as JSON:\n");
            for (tools) |t| {
                try templates.writePyJson(w, t.value, null, 0);
                try w.writeByte('\n');
            }
            try w.writeAll("\nTo call one or more functions, reply with only a JSON object in this form, and nothing else:\n" ++
                "{\"tool_calls\": [{\"name\": <function-name>, \"arguments\": <args-json-object>}]}\n" ++
                "Otherwise, answer in plain text. The results of calls come back in messages that begin with \"Function result\".");
        },
    }
}

fn appendCallsText(w: anytype, calls: []const templates.ToolCall, format: Format) !void {
    if (format != .hermes) try w.writeAll("{\"tool_calls\": [");
    for (calls, 0..) |c, i| {
        if (format == .hermes) {
            if (i > 0) try w.writeByte('\n');
            try w.writeAll("<tool_call>\n");
        } else if (i > 0) try w.writeAll(", ");
        try w.writeAll("{\"name\": ");
        try templates.writePyString(w, c.name);
        try w.print(", \"arguments\": {s}}}", .{if (c.arguments.len > 0) c.arguments else "{}"});
        if (format == .hermes) try w.writeAll("\n</tool_call>");
    }
    if (format != .hermes) try w.writeAll("]}");
}

// ---------------------------------------------------------------------------
// Grammar

/// The grammar for `tool_choice` in `format`: null for "none"; for
/// "required" or a named function a grammar that admits only a call (one
/// object schema per function: the name as a constant, the arguments by the
/// function's schema), wrapped in the format's markup; for "auto" the same,
/// lazy, armed by the format's opening marker. Allocates in `arena`.
///
/// The XML form (`qwen_xml`) and Gemma 4's form cannot be written as a JSON
/// Schema, the only grammar the host builds with a prefix: a required or
/// named call is held to a Hermes JSON body inside the format's call markers,
/// which the format's reader takes too; "auto" gets no grammar, since one
/// armed at the opening marker would force JSON where the model goes on to
/// write its own form.
pub fn constraint(arena: std.mem.Allocator, format: Format, tools: []const Tool, choice: openai.ToolChoice, parallel: bool) !?openai.Constraint {
    const args_key = if (format == .llama3) "parameters" else "arguments";
    var one = std.ArrayList(u8).init(arena);
    const w = one.writer();
    var selected: usize = 0;
    for (tools) |t| {
        switch (choice) {
            .none => return null,
            .function => |name| if (!std.mem.eql(u8, name, t.name)) continue,
            else => {},
        }
        try w.writeAll(if (selected == 0) "" else ",");
        try w.writeAll("{\"type\":\"object\",\"properties\":{\"name\":{\"const\":");
        try std.json.encodeJsonString(t.name, .{}, w);
        try w.print("}},\"{s}\":{s}}},\"required\":[\"name\",\"{s}\"]}}", .{ args_key, t.parameters, args_key });
        selected += 1;
    }
    if (selected == 0) return null;
    const call_schema = if (selected == 1) one.items else try std.fmt.allocPrint(arena, "{{\"anyOf\":[{s}]}}", .{one.items});
    const list_schema = try std.fmt.allocPrint(arena, "{{\"type\":\"array\",\"items\":{s},\"minItems\":1{s}}}", .{ call_schema, if (parallel) "" else ",\"maxItems\":1" });
    const lazy = choice == .auto;
    return switch (format) {
        .hermes => .{ .schema = call_schema, .prefix = hermes_open ++ "\n", .suffix = "\n" ++ hermes_close, .triggers = if (lazy) &.{hermes_open} else &.{} },
        .qwen_xml => if (lazy) null else .{ .schema = call_schema, .prefix = hermes_open ++ "\n", .suffix = "\n" ++ hermes_close },
        .gemma4 => if (lazy) null else .{ .schema = call_schema, .prefix = gemma_open, .suffix = gemma_close },
        .llama3 => .{ .schema = call_schema, .triggers = if (lazy) &.{"{\"name\""} else &.{} },
        .mistral => .{ .schema = list_schema, .prefix = mistral_open, .triggers = if (lazy) &.{mistral_open} else &.{} },
        .generic => .{ .schema = list_schema, .prefix = "{" ++ generic_key ++ ": ", .suffix = "}", .triggers = if (lazy) &.{"{" ++ generic_key} else &.{} },
    };
}

// ---------------------------------------------------------------------------
// Reading calls

/// A call found in the text. While the text is incomplete, `name` may still
/// be null and `arguments` a prefix of the final arguments.
pub const Call = struct {
    name: ?[]const u8 = null,
    /// An id the model wrote itself (Mistral).
    id: ?[]const u8 = null,
    /// The arguments' JSON text (decoded when the model wrote them as a string).
    arguments: []const u8 = "",
    /// The arguments came as a JSON string: known only once whole.
    arguments_quoted: bool = false,
    complete: bool = false,
};

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
    const outcome: Scanner.Stop!void = if (starts_bare) s.leadingJson(true) else switch (format) {
        .hermes => s.hermes(),
        .qwen_xml => s.qwenXml(),
        .gemma4 => s.gemma4(),
        .mistral => s.mistral(),
        .llama3, .generic => s.leadingJson(format == .generic),
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

fn validJson(arena: std.mem.Allocator, text: []const u8) bool {
    _ = std.json.parseFromSliceLeaky(std.json.Value, arena, text, .{}) catch return false;
    return true;
}

const Scanner = struct {
    arena: std.mem.Allocator,
    text: []const u8,
    final: bool,
    tools: []const Tool = &.{},
    content: std.ArrayList(u8),
    calls: std.ArrayList(Call),

    const Stop = error{ Incomplete, Invalid, OutOfMemory };

    /// `<tool_call>` holding `<function=NAME>` and its `<parameter=KEY>`s, or
    /// a Hermes JSON body; anywhere, any number of times.
    fn qwenXml(s: *Scanner) Stop!void {
        var pos: usize = 0;
        while (true) {
            const at = std.mem.indexOfPos(u8, s.text, pos, hermes_open) orelse return s.plain(pos, hermes_open);
            try s.content.appendSlice(s.text[pos..at]);
            var i = skipWs(s.text, at + hermes_open.len);
            const body = s.text[i..];
            if (body.len > 0 and body[0] == '{') {
                i = try s.callObject(i);
            } else if (std.mem.startsWith(u8, body, xml_function)) {
                i = try s.xmlCall(i);
            } else if (std.mem.startsWith(u8, xml_function, body)) {
                return error.Incomplete;
            } else return error.Invalid;
            pos = try s.closing(i, hermes_close);
        }
    }

    /// Past a call's closing marker at `i` (after whitespace). A missing one is
    /// forgiven; the start of one at the end of unfinished text is Incomplete.
    fn closing(s: *Scanner, i: usize, marker: []const u8) Stop!usize {
        const at = skipWs(s.text, i);
        const rest = s.text[at..];
        if (std.mem.startsWith(u8, rest, marker)) return at + marker.len;
        if (!s.final and std.mem.startsWith(u8, marker, rest)) return error.Incomplete;
        return at;
    }

    /// `<|tool_call>call:NAME{..}<tool_call|>` or `<|tool_call>` with a Hermes
    /// JSON body; anywhere, any number of times.
    fn gemma4(s: *Scanner) Stop!void {
        var pos: usize = 0;
        while (true) {
            const at = std.mem.indexOfPos(u8, s.text, pos, gemma_open) orelse return s.plain(pos, gemma_open);
            try s.content.appendSlice(s.text[pos..at]);
            var i = skipWs(s.text, at + gemma_open.len);
            const body = s.text[i..];
            if (body.len > 0 and body[0] == '{') {
                i = try s.callObject(i);
            } else if (std.mem.startsWith(u8, body, gemma_call)) {
                i = try s.gemmaCall(i + gemma_call.len);
            } else if (std.mem.startsWith(u8, gemma_call, body)) {
                return error.Incomplete;
            } else return error.Invalid;
            pos = try s.closing(i, gemma_close);
        }
    }

    /// `NAME{key:value,..}` at `start`: the call is recorded once its name is
    /// whole, and its arguments (the object as JSON) grow by whole pairs.
    fn gemmaCall(s: *Scanner, start: usize) Stop!usize {
        const index = s.calls.items.len;
        return s.readGemmaCall(start, index) catch |err| {
            if (err == error.Invalid) s.calls.shrinkRetainingCapacity(@min(index, s.calls.items.len));
            return err;
        };
    }

    fn readGemmaCall(s: *Scanner, start: usize, index: usize) Stop!usize {
        const brace = std.mem.indexOfAnyPos(u8, s.text, start, "{<\n") orelse return error.Incomplete;
        if (s.text[brace] != '{') return error.Invalid;
        const name = std.mem.trim(u8, s.text[start..brace], " ");
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

    /// `<function=NAME>`, parameters, `</function>` at `start`; the call is
    /// recorded once its name is whole, and its arguments (a JSON object
    /// built from the parameters) grow by whole parameters. Returns the
    /// index after it.
    fn xmlCall(s: *Scanner, start: usize) Stop!usize {
        const index = s.calls.items.len;
        return s.readXmlCall(start, index) catch |err| {
            if (err == error.Invalid) s.calls.shrinkRetainingCapacity(@min(index, s.calls.items.len));
            return err;
        };
    }

    fn readXmlCall(s: *Scanner, start: usize, index: usize) Stop!usize {
        const name_start = start + xml_function.len;
        const name_end = try tagEnd(s.text, name_start);
        const name = std.mem.trim(u8, s.text[name_start..name_end], " ");
        if (name.len == 0) return error.Invalid;
        try s.calls.append(.{ .name = name });
        const props = s.properties(name);
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
                try s.appendTyped(&args, value, props, key);
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
    fn appendTyped(s: *Scanner, out: *std.ArrayList(u8), value: []const u8, props: ?std.json.ObjectMap, key: []const u8) Stop!void {
        const string_typed = if (props) |p| if (p.get(key)) |schema| isStringSchema(schema) else false else false;
        if (!string_typed and value.len > 0 and validJson(s.arena, value)) return out.appendSlice(value);
        try std.json.encodeJsonString(value, .{}, out.writer());
    }

    /// `<tool_call>{...}</tool_call>`, anywhere, any number of times.
    fn hermes(s: *Scanner) Stop!void {
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
    fn mistral(s: *Scanner) Stop!void {
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
    fn leadingJson(s: *Scanner, generic: bool) Stop!void {
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

    /// The leading JSON turned out not to be a call: it is all content.
    fn notACall(s: *Scanner, err: Stop) Stop!void {
        if (err == error.Invalid and s.calls.items.len == 0) {
            s.content.clearRetainingCapacity();
            try s.content.appendSlice(s.text);
            return;
        }
        return err;
    }

    /// Text after the last call; before the end, a tail that may begin
    /// `marker` is held back.
    fn plain(s: *Scanner, from: usize, marker: []const u8) Stop!void {
        const rest = s.text[@min(from, s.text.len)..];
        var keep: usize = 0;
        if (!s.final) {
            var len = @min(marker.len -| 1, rest.len);
            while (len > 0) : (len -= 1) {
                if (std.mem.endsWith(u8, rest, marker[0..len])) break;
            }
            keep = len;
        }
        try s.content.appendSlice(rest[0 .. rest.len - keep]);
    }

    /// `[` call, call, ... `]`; returns the index after it.
    fn callList(s: *Scanner, start: usize) Stop!usize {
        var i = skipWs(s.text, start);
        if (i == s.text.len) return error.Incomplete;
        if (s.text[i] != '[') return error.Invalid;
        i += 1;
        while (true) {
            i = skipWs(s.text, i);
            if (i == s.text.len) return error.Incomplete;
            switch (s.text[i]) {
                ']' => return i + 1,
                ',' => i += 1,
                '{' => i = try s.callObject(i),
                else => return error.Invalid,
            }
        }
    }

    /// One `{"name": .., "arguments"|"parameters": .., "id": ..}` object;
    /// the call is recorded as soon as it begins. Returns the index after it.
    fn callObject(s: *Scanner, start: usize) Stop!usize {
        const index = s.calls.items.len;
        return s.readCall(start) catch |err| {
            // Not a call after all: forget it.
            if (err == error.Invalid) s.calls.shrinkRetainingCapacity(@min(index, s.calls.items.len));
            return err;
        };
    }

    fn readCall(s: *Scanner, start: usize) Stop!usize {
        var i = skipWs(s.text, start);
        if (i == s.text.len) return error.Incomplete;
        if (s.text[i] != '{') return error.Invalid;
        i += 1;
        const index = s.calls.items.len;
        try s.calls.append(.{});
        while (true) {
            i = skipWs(s.text, i);
            if (i == s.text.len) return error.Incomplete;
            switch (s.text[i]) {
                '}' => break,
                ',' => {
                    i += 1;
                    continue;
                },
                '"' => {},
                else => return error.Invalid,
            }
            const key_end = try scanString(s.text, i);
            const key = try s.decode(s.text[i..key_end]);
            i = skipWs(s.text, key_end);
            if (i == s.text.len) return error.Incomplete;
            if (s.text[i] != ':') return error.Invalid;
            i = skipWs(s.text, i + 1);
            if (i == s.text.len) return error.Incomplete;
            const is_args = std.mem.eql(u8, key, "arguments") or std.mem.eql(u8, key, "parameters");
            const call = &s.calls.items[index];
            const value_end = scanValue(s.text, i, s.final) catch |err| {
                if (err == error.Incomplete and is_args and s.text[i] != '"') call.arguments = s.text[i..];
                if (is_args) call.arguments_quoted = s.text[i] == '"';
                return err;
            };
            const value = s.text[i..value_end];
            if (std.mem.eql(u8, key, "name")) {
                if (value[0] != '"') return error.Invalid;
                call.name = try s.decode(value);
            } else if (is_args) {
                call.arguments_quoted = value[0] == '"';
                call.arguments = if (call.arguments_quoted) try s.decode(value) else value;
            } else if (std.mem.eql(u8, key, "id") and value[0] == '"') {
                call.id = try s.decode(value);
            }
            i = value_end;
        }
        const call = &s.calls.items[index];
        if (call.name == null) return error.Invalid;
        call.complete = true;
        return i + 1;
    }

    fn decode(s: *Scanner, quoted: []const u8) Stop![]const u8 {
        if (std.mem.indexOfScalar(u8, quoted, '\\') == null) return quoted[1 .. quoted.len - 1];
        return std.json.parseFromSliceLeaky([]const u8, s.arena, quoted, .{}) catch |err| switch (err) {
            error.OutOfMemory => error.OutOfMemory,
            else => error.Invalid,
        };
    }
};

/// A Gemma 4 object key at `start` (bare, or between `<|"|>`) and its `:`,
/// written to `out` as a JSON string. Returns the index after the `:`.
fn gemmaKey(text: []const u8, start: usize, out: *std.ArrayList(u8)) error{ Incomplete, Invalid, OutOfMemory }!usize {
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
fn gemmaValue(arena: std.mem.Allocator, text: []const u8, start: usize, out: *std.ArrayList(u8), depth: usize) error{ Incomplete, Invalid, OutOfMemory }!usize {
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

/// `{ "tool_calls" :` at `i`: the index of the value after it.
fn isWrapper(text: []const u8, i: usize) ?usize {
    var j = skipWs(text, i + 1);
    if (!std.mem.startsWith(u8, text[j..], generic_key)) return null;
    j = skipWs(text, j + generic_key.len);
    if (j >= text.len or text[j] != ':') return null;
    return j + 1;
}

fn skipWs(text: []const u8, start: usize) usize {
    var i = start;
    while (i < text.len and std.ascii.isWhitespace(text[i])) i += 1;
    return i;
}

/// `text[i]` is `"`: the index after the closing quote.
fn scanString(text: []const u8, start: usize) error{Incomplete}!usize {
    var i = start + 1;
    while (i < text.len) : (i += 1) switch (text[i]) {
        '\\' => i += 1,
        '"' => return i + 1,
        else => {},
    };
    return error.Incomplete;
}

/// The end of the JSON value at `i` (its syntax is checked later, whole).
fn scanValue(text: []const u8, start: usize, final: bool) error{ Incomplete, Invalid }!usize {
    switch (text[start]) {
        '"' => return scanString(text, start),
        '{', '[' => {
            var depth: usize = 0;
            var i = start;
            while (i < text.len) {
                switch (text[i]) {
                    '"' => {
                        i = try scanString(text, i);
                        continue;
                    },
                    '{', '[' => depth += 1,
                    '}', ']' => {
                        depth -= 1;
                        if (depth == 0) return i + 1;
                    },
                    else => {},
                }
                i += 1;
            }
            return error.Incomplete;
        },
        else => {
            var i = start;
            while (i < text.len and (std.ascii.isAlphanumeric(text[i]) or text[i] == '-' or text[i] == '+' or text[i] == '.')) i += 1;
            if (i == start) return error.Invalid;
            if (i == text.len and !final) return error.Incomplete;
            return i;
        },
    }
}

// ---------------------------------------------------------------------------
// Streaming

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
    /// Generation was constrained to a call (see `parseOpts`).
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
        calls: []openai.OutCall,
    };

    /// The end of the text: sends the rest and returns the whole result,
    /// allocated in `arena`.
    pub fn finish(self: *Stream, arena: std.mem.Allocator, sink: anytype) !Result {
        const parsed = try parseWith(arena, self.format, self.text.items, true, self.bare, self.tools);
        try self.send(parsed, sink);
        const calls = try arena.alloc(openai.OutCall, self.count(parsed.calls));
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

// ---------------------------------------------------------------------------

const testing = std.testing;

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

test "format detection from a rendered prompt" {
    try testing.expectEqual(Format.hermes, detectFormat("<|im_start|>system\n<tools>..</tools> <tool_call>"));
    try testing.expectEqual(Format.mistral, detectFormat("[AVAILABLE_TOOLS] [..][/AVAILABLE_TOOLS][INST]"));
    try testing.expectEqual(Format.llama3, detectFormat("<|start_header_id|>user<|end_header_id|>"));
    try testing.expectEqual(Format.generic, detectFormat("### User: hi"));
    try testing.expectEqual(Format.hermes, taughtFormat("<|im_start|>user\nhi"));
    try testing.expectEqual(Format.generic, taughtFormat("<start_of_turn>user"));
}

fn testTool(arena: std.mem.Allocator, json: []const u8) !Tool {
    const value = try std.json.parseFromSliceLeaky(std.json.Value, arena, json, .{});
    const f = value.object.get("function").?.object;
    return .{ .name = f.get("name").?.string, .parameters = try std.json.stringifyAlloc(arena, f.get("parameters").?, .{}), .value = value };
}

test "the grammar: one schema per function, the format's markup, lazy for auto" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tools = [_]Tool{
        try testTool(a, "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}"),
        try testTool(a, "{\"type\":\"function\",\"function\":{\"name\":\"g\",\"parameters\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}}}}}"),
    };
    const req = (try constraint(a, .hermes, &tools, .required, true)).?;
    try testing.expectEqualStrings("<tool_call>\n", req.prefix);
    try testing.expectEqualStrings("\n</tool_call>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    const schema = try std.json.parseFromSliceLeaky(std.json.Value, a, req.schema, .{});
    const any = schema.object.get("anyOf").?.array.items;
    try testing.expectEqual(@as(usize, 2), any.len);
    try testing.expectEqualStrings("g", any[1].object.get("properties").?.object.get("name").?.object.get("const").?.string);

    const named = (try constraint(a, .llama3, &tools, .{ .function = "g" }, true)).?;
    const one = try std.json.parseFromSliceLeaky(std.json.Value, a, named.schema, .{});
    try testing.expect(one.object.get("properties").?.object.get("parameters") != null);

    const auto = (try constraint(a, .mistral, &tools, .auto, false)).?;
    try testing.expectEqualStrings("[TOOL_CALLS]", auto.triggers[0]);
    try testing.expect(std.mem.indexOf(u8, auto.schema, "\"maxItems\":1") != null);
    try testing.expect((try constraint(a, .hermes, &tools, .none, true)) == null);
}

test "teaching a format rewrites calls and results as text" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tools = [_]Tool{try testTool(a, "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{}}}")};
    const calls = [_]templates.ToolCall{.{ .id = "call_1", .name = "get_time", .arguments = "{}" }};
    const messages = [_]Message{
        .{ .role = .user, .content = "time?" },
        .{ .role = .assistant, .content = "", .tool_calls = &calls },
        .{ .role = .tool, .content = "12:00", .tool_call_id = "call_1" },
    };
    const taught = try teach(a, &messages, &tools, .generic);
    try testing.expectEqual(@as(usize, 4), taught.len);
    try testing.expect(taught[0].role == .system and std.mem.indexOf(u8, taught[0].content, "\"get_time\"") != null);
    try testing.expectEqualStrings("{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {}}]}", taught[2].content);
    try testing.expectEqualStrings("Function result (get_time):\n12:00", taught[3].content);
    try testing.expect(taught[3].role == .user);
    const hermes = try teach(a, &messages, &tools, .hermes);
    try testing.expectEqualStrings("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", hermes[2].content);
    try testing.expectEqualStrings("<tool_response>\n12:00\n</tool_response>", hermes[3].content);
}

const weather_tool =
    \\{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{
    \\"city":{"type":"string"},"days":{"type":"integer"},"zip":{"type":"string"},"metric":{"type":"boolean"},
    \\"where":{"type":"object"},"tags":{"type":"array","items":{"type":"string"}}}}}}
;

test "qwen xml calls: parameters become a JSON object typed by the schema" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const tool_list = [_]Tool{try testTool(arena.allocator(), weather_tool)};
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

test "qwen xml: detected from the probe, grammar for required calls only" {
    // Qwen3.5's template, rendered with tools, shows the XML form; Qwen3's shows Hermes JSON
    try testing.expectEqual(Format.qwen_xml, detectFormat("<tools>\n{..}\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>"));
    try testing.expectEqual(Format.hermes, detectFormat("within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"));
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tool_list = [_]Tool{try testTool(a, weather_tool)};
    const req = (try constraint(a, .qwen_xml, &tool_list, .required, true)).?;
    try testing.expectEqualStrings("<tool_call>\n", req.prefix);
    try testing.expectEqualStrings("\n</tool_call>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    const schema = try std.json.parseFromSliceLeaky(std.json.Value, a, req.schema, .{});
    try testing.expectEqualStrings("get_weather", schema.object.get("properties").?.object.get("name").?.object.get("const").?.string);
    try testing.expect(schema.object.get("properties").?.object.get("arguments") != null);
    const named = (try constraint(a, .qwen_xml, &tool_list, .{ .function = "get_weather" }, true)).?;
    try testing.expectEqualStrings(req.schema, named.schema);
    try testing.expect((try constraint(a, .qwen_xml, &tool_list, .auto, true)) == null);
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

test "gemma 4: detected from the probe, grammar for required calls only" {
    try testing.expectEqual(Format.gemma4, detectFormat("<|turn>system\n<|tool>declaration:get_weather{description:<|\"|>The weather<|\"|>}<tool|><turn|>\n"));
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tool_list = [_]Tool{try testTool(a, weather_tool)};
    const req = (try constraint(a, .gemma4, &tool_list, .required, false)).?;
    try testing.expectEqualStrings("<|tool_call>", req.prefix);
    try testing.expectEqualStrings("<tool_call|>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    try testing.expect((try constraint(a, .gemma4, &tool_list, .auto, true)) == null);
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
