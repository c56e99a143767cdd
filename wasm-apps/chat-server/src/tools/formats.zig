//! Function calling, the formats: the call markup of each model family
//! (`Format`), which one a model's own template uses (detected from a probe
//! render), and how a model whose template knows no tools is taught one in
//! the system message.

const std = @import("std");
const shared = @import("shared");

const templates = shared.templates;
const python = shared.python;
pub const Format = templates.ToolFormat;
const Message = templates.Message;
const Tool = templates.Tool;

pub const hermes_open = "<tool_call>";

pub const hermes_close = "</tool_call>";

pub const mistral_open = "[TOOL_CALLS]";

pub const python_tag = "<|python_tag|>";

pub const generic_key = "\"tool_calls\"";

pub const xml_function = "<function=";

pub const xml_function_close = "</function>";

pub const xml_parameter = "<parameter=";

pub const xml_parameter_close = "</parameter>";

pub const gemma_open = "<|tool_call>";

pub const gemma_close = "<tool_call|>";

pub const gemma_call = "call:";

pub const gemma_quote = "<|\"|>";

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
                try python.writePyJson(w, t.value, null, 0);
            }
            try w.writeAll("\n</tools>\n\nFor each function call, return a json object with function name and arguments " ++
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
        },
        else => {
            try w.writeAll("You can call functions to answer. These are the functions, as JSON:\n");
            for (tools) |t| {
                try python.writePyJson(w, t.value, null, 0);
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
        try python.writePyString(w, c.name);
        try w.print(", \"arguments\": {s}}}", .{if (c.arguments.len > 0) c.arguments else "{}"});
        if (format == .hermes) try w.writeAll("\n</tool_call>");
    }
    if (format != .hermes) try w.writeAll("]}");
}

const testing = std.testing;

test "format detection from a rendered prompt" {
    try testing.expectEqual(Format.hermes, detectFormat("<|im_start|>system\n<tools>..</tools> <tool_call>"));
    try testing.expectEqual(Format.mistral, detectFormat("[AVAILABLE_TOOLS] [..][/AVAILABLE_TOOLS][INST]"));
    try testing.expectEqual(Format.llama3, detectFormat("<|start_header_id|>user<|end_header_id|>"));
    try testing.expectEqual(Format.generic, detectFormat("### User: hi"));
    try testing.expectEqual(Format.hermes, taughtFormat("<|im_start|>user\nhi"));
    try testing.expectEqual(Format.generic, taughtFormat("<start_of_turn>user"));
}

test "teaching a format rewrites calls and results as text" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tools = [_]Tool{try shared.test_support.toolFrom(a, "{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{}}}")};
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
