//! Prompt templates chosen by name. Each renders exactly what the Jinja chat
//! template of its reference model renders with `add_generation_prompt=True`
//! (tests/test_templates_golden.py holds the real templates and checks this).
//! The `auto` template is not here: the host renders the model's own template.

const std = @import("std");
const python = @import("python.zig");

const pyStrip = python.pyStrip;
const writePyJson = python.writePyJson;
const writePyString = python.writePyString;

pub const Role = enum {
    system,
    user,
    assistant,
    /// A function's result (OpenAI's `role: "tool"`).
    tool,

    pub fn name(self: Role) []const u8 {
        return @tagName(self);
    }
};

pub const Message = struct {
    role: Role,
    content: []const u8,
    /// The calls of an assistant turn.
    tool_calls: []const ToolCall = &.{},
    /// On a tool message: the call it answers.
    tool_call_id: ?[]const u8 = null,
    name: ?[]const u8 = null,
};

/// A function call in the conversation: `arguments` is JSON text.
pub const ToolCall = struct {
    id: []const u8,
    name: []const u8,
    arguments: []const u8,
};

/// A function the model may call, as the request declared it.
pub const Tool = struct {
    name: []const u8,
    description: ?[]const u8 = null,
    /// The JSON Schema of the arguments, serialized.
    parameters: []const u8,
    strict: bool = false,
    /// The tool object as the client sent it (templates print it as it came).
    value: std.json.Value,
};

/// How a model family writes function calls.
pub const ToolFormat = enum {
    /// `<tool_call>{"name":..,"arguments":..}</tool_call>` (Hermes, Qwen2.5).
    hermes,
    /// A bare `{"name":..,"parameters":..}` (Llama 3.1-3.3).
    llama3,
    /// `[TOOL_CALLS][{"name":..,"arguments":..,"id":..}]` (Mistral).
    mistral,
    /// `{"tool_calls":[{"name":..,"arguments":..}]}`, taught by an injected system prompt.
    generic,
    /// `<tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n</function>\n</tool_call>`
    /// (Qwen3-Coder, Qwen3.5); a Hermes JSON body inside `<tool_call>` is read too.
    qwen_xml,
    /// `<|tool_call>call:NAME{key:value,..}<tool_call|>`, strings between `<|"|>` (Gemma 4);
    /// a Hermes JSON body after `<|tool_call>` is read too.
    gemma4,
};

pub const Template = enum {
    chatml,
    @"llama-3-chat",
    @"llama-2-chat",
    @"mistral-instruct",
    @"gemma-instruct",
    @"phi-3-chat",
    zephyr,
    @"deepseek-chat",

    pub fn fromName(text: []const u8) ?Template {
        return std.meta.stringToEnum(Template, text);
    }

    pub fn name(self: Template) []const u8 {
        return @tagName(self);
    }

    /// The call format the template renders natively; null: it knows no tools
    /// (the app then teaches a format in the system message).
    pub fn toolFormat(self: Template) ?ToolFormat {
        return switch (self) {
            .chatml => .hermes,
            .@"llama-3-chat" => .llama3,
            .@"mistral-instruct" => .mistral,
            else => null,
        };
    }

    /// The text that ends an assistant turn in this format. The host normally
    /// stops at the model's end-of-generation token; this also catches a model
    /// whose vocabulary lacks the marker as a special token and spells it out.
    pub fn endOfTurn(self: Template) []const u8 {
        return switch (self) {
            .chatml => "<|im_end|>",
            .@"llama-3-chat" => "<|eot_id|>",
            .@"llama-2-chat", .@"mistral-instruct", .zephyr => "</s>",
            .@"gemma-instruct" => "<end_of_turn>",
            .@"phi-3-chat" => "<|end|>",
            .@"deepseek-chat" => "<｜end▁of▁sentence｜>",
        };
    }
};

/// Renders `messages` followed by the cue for the assistant's answer.
/// Caller owns the returned text.
pub fn render(allocator: std.mem.Allocator, template: Template, messages: []const Message) ![]u8 {
    return renderTools(allocator, template, messages, &.{});
}

/// `render` with the functions the model may call. A template with a native
/// tool format (`toolFormat`) renders tools, calls and results as its model
/// family does; other templates receive conversations whose tool turns were
/// already rewritten as text (the chat server's tools/format.zig), and
/// ignore `tools`.
pub fn renderTools(allocator: std.mem.Allocator, template: Template, messages: []const Message, tools: []const Tool) ![]u8 {
    var out = std.ArrayList(u8).init(allocator);
    errdefer out.deinit();
    const w = out.writer();
    if (template.toolFormat() != null and (tools.len > 0 or hasToolTurns(messages))) {
        switch (template) {
            .chatml => try renderQwen(allocator, w, messages, tools),
            .@"llama-3-chat" => try renderLlama31(allocator, w, messages, tools),
            .@"mistral-instruct" => try renderMistralTools(allocator, w, messages, tools),
            else => unreachable,
        }
        return out.toOwnedSlice();
    }
    switch (template) {
        .chatml => {
            for (messages) |m| try w.print("<|im_start|>{s}\n{s}<|im_end|>\n", .{ m.role.name(), m.content });
            try w.writeAll("<|im_start|>assistant\n");
        },
        .@"llama-3-chat" => {
            for (messages, 0..) |m, i| {
                if (i == 0) try w.writeAll("<|begin_of_text|>");
                try w.print("<|start_header_id|>{s}<|end_header_id|>\n\n{s}<|eot_id|>", .{ m.role.name(), pyStrip(m.content) });
            }
            try w.writeAll("<|start_header_id|>assistant<|end_header_id|>\n\n");
        },
        .@"llama-2-chat" => try renderLlama2(allocator, w, messages),
        .@"mistral-instruct" => {
            // The model knows no system role: its text joins the next user turn.
            const folded = try foldSystem(allocator, messages);
            defer freeFolded(allocator, folded);
            try w.writeAll("<s>");
            for (folded) |m| switch (m.role) {
                .user, .tool => try w.print("[INST] {s} [/INST]", .{m.content}),
                .assistant => try w.print("{s}</s>", .{m.content}),
                .system => unreachable, // folded away above
            };
        },
        .@"gemma-instruct" => {
            // A leading system message becomes a prefix of the first turn.
            var rest = messages;
            var prefix: []const u8 = "";
            if (rest.len > 0 and rest[0].role == .system) {
                prefix = rest[0].content;
                rest = rest[1..];
            }
            try w.writeAll("<bos>");
            for (rest, 0..) |m, i| {
                const role = if (m.role == .assistant) "model" else m.role.name();
                try w.print("<start_of_turn>{s}\n", .{role});
                if (i == 0 and messages.len > rest.len) try w.print("{s}\n\n", .{prefix});
                try w.print("{s}<end_of_turn>\n", .{pyStrip(m.content)});
            }
            try w.writeAll("<start_of_turn>model\n");
        },
        .@"phi-3-chat" => {
            for (messages) |m| {
                // The reference template leaves out an empty system message.
                if (m.role == .system and m.content.len == 0) continue;
                try w.print("<|{s}|>\n{s}<|end|>\n", .{ m.role.name(), m.content });
            }
            try w.writeAll("<|assistant|>\n");
        },
        .zephyr => {
            for (messages) |m| try w.print("<|{s}|>\n{s}</s>\n", .{ m.role.name(), m.content });
            // The reference template puts the cue inside its loop: no messages, no cue.
            if (messages.len > 0) try w.writeAll("<|assistant|>\n");
        },
        .@"deepseek-chat" => {
            try w.writeAll("<｜begin▁of▁sentence｜>");
            for (messages) |m| switch (m.role) {
                .user, .tool => try w.print("User: {s}\n\n", .{m.content}),
                .assistant => try w.print("Assistant: {s}<｜end▁of▁sentence｜>", .{m.content}),
                .system => try w.print("{s}\n\n", .{m.content}),
            };
            try w.writeAll("Assistant:");
        },
    }
    return out.toOwnedSlice();
}

fn renderLlama2(allocator: std.mem.Allocator, w: anytype, messages: []const Message) !void {
    var rest = messages;
    var system: ?[]const u8 = null;
    if (rest.len > 0 and rest[0].role == .system) {
        system = rest[0].content;
        rest = rest[1..];
    }
    for (rest, 0..) |m, i| {
        var content = m.content;
        var owned: ?[]u8 = null;
        defer if (owned) |o| allocator.free(o);
        if (i == 0) if (system) |s| {
            owned = try std.fmt.allocPrint(allocator, "<<SYS>>\n{s}\n<</SYS>>\n\n{s}", .{ s, m.content });
            content = owned.?;
        };
        switch (m.role) {
            .user, .tool => try w.print("<s>[INST] {s} [/INST]", .{pyStrip(content)}),
            .assistant => try w.print(" {s} </s>", .{pyStrip(content)}),
            .system => {}, // the reference template ignores a later system message
        }
    }
}

/// Moves the text of system messages into the next user message
/// ("system\n\nuser"), for formats without a system role. A system message
/// with no user message after it becomes a user message.
fn foldSystem(allocator: std.mem.Allocator, messages: []const Message) ![]Message {
    var out = std.ArrayList(Message).init(allocator);
    errdefer freeFolded(allocator, out.items);
    var pending = std.ArrayList(u8).init(allocator);
    defer pending.deinit();
    var has_pending = false;
    for (messages) |m| {
        switch (m.role) {
            .system => {
                if (has_pending) try pending.appendSlice("\n\n");
                try pending.appendSlice(m.content);
                has_pending = true;
            },
            .user => {
                if (has_pending) try pending.appendSlice("\n\n");
                try pending.appendSlice(m.content);
                try out.append(.{ .role = .user, .content = try pending.toOwnedSlice() });
                has_pending = false;
            },
            .assistant, .tool => try out.append(.{ .role = m.role, .content = try allocator.dupe(u8, m.content), .tool_calls = m.tool_calls, .tool_call_id = m.tool_call_id, .name = m.name }),
        }
    }
    if (has_pending) try out.append(.{ .role = .user, .content = try pending.toOwnedSlice() });
    return out.toOwnedSlice();
}

fn freeFolded(allocator: std.mem.Allocator, messages: []const Message) void {
    for (messages) |m| allocator.free(m.content);
    allocator.free(messages);
}

fn hasToolTurns(messages: []const Message) bool {
    for (messages) |m| if (m.role == .tool or m.tool_calls.len > 0) return true;
    return false;
}

/// Qwen2.5's template (the Hermes call format on ChatML): the tools in the
/// system message, calls in `<tool_call>` tags, results as `<tool_response>`
/// in a user turn. Without a system message the tools section stands alone
/// (Qwen's template would add Qwen's own identity there).
fn renderQwen(allocator: std.mem.Allocator, w: anytype, messages: []const Message, tools: []const Tool) !void {
    var rest = messages;
    if (tools.len > 0) {
        try w.writeAll("<|im_start|>system\n");
        if (rest.len > 0 and rest[0].role == .system) {
            try w.print("{s}\n\n", .{rest[0].content});
            rest = rest[1..];
        }
        try w.writeAll("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" ++
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>");
        for (tools) |t| {
            try w.writeByte('\n');
            try writePyJson(w, t.value, null, 0);
        }
        try w.writeAll("\n</tools>\n\nFor each function call, return a json object with function name and arguments " ++
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
    }
    for (rest, 0..) |m, i| switch (m.role) {
        .system, .user => try w.print("<|im_start|>{s}\n{s}<|im_end|>\n", .{ m.role.name(), m.content }),
        .assistant => {
            if (m.tool_calls.len == 0) {
                try w.print("<|im_start|>assistant\n{s}<|im_end|>\n", .{m.content});
                continue;
            }
            try w.writeAll("<|im_start|>assistant");
            if (m.content.len > 0) try w.print("\n{s}", .{m.content});
            for (m.tool_calls) |call| {
                try w.writeAll("\n<tool_call>\n{\"name\": \"");
                try w.writeAll(call.name);
                try w.writeAll("\", \"arguments\": ");
                try writeArguments(allocator, w, call.arguments, null);
                try w.writeAll("}\n</tool_call>");
            }
            try w.writeAll("<|im_end|>\n");
        },
        .tool => {
            if (i == 0 or rest[i - 1].role != .tool) try w.writeAll("<|im_start|>user");
            try w.print("\n<tool_response>\n{s}\n</tool_response>", .{m.content});
            if (i == rest.len - 1 or rest[i + 1].role != .tool) try w.writeAll("<|im_end|>\n");
        },
    };
    try w.writeAll("<|im_start|>assistant\n");
}

/// Llama 3.1's template (its defaults: tools in the first user message, the
/// date line of 26 Jul 2024): calls as `{"name": .., "parameters": ..}`,
/// results in `ipython` turns. The reference takes one call per assistant
/// turn; several become consecutive assistant turns here.
fn renderLlama31(allocator: std.mem.Allocator, w: anytype, messages: []const Message, tools: []const Tool) !void {
    var rest = messages;
    var system: []const u8 = "";
    if (rest.len > 0 and rest[0].role == .system) {
        system = pyStrip(rest[0].content);
        rest = rest[1..];
    }
    try w.writeAll("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n");
    if (tools.len > 0) try w.writeAll("Environment: ipython\n");
    try w.print("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{s}<|eot_id|>", .{system});
    if (tools.len > 0 and rest.len > 0) {
        try w.writeAll("<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call " ++
            "with its proper arguments that best answers the given prompt.\n\n" ++
            "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n");
        for (tools) |t| {
            try writePyJson(w, t.value, 4, 0);
            try w.writeAll("\n\n");
        }
        try w.print("{s}<|eot_id|>", .{pyStrip(rest[0].content)});
        rest = rest[1..];
    }
    for (rest) |m| {
        if (m.role == .tool) {
            try w.writeAll("<|start_header_id|>ipython<|end_header_id|>\n\n");
            // The reference pipes string results through tojson too (a string is iterable).
            try writePyString(w, m.content);
            try w.writeAll("<|eot_id|>");
        } else if (m.tool_calls.len > 0) {
            for (m.tool_calls) |call| {
                try w.print("<|start_header_id|>assistant<|end_header_id|>\n\n{{\"name\": \"{s}\", \"parameters\": ", .{call.name});
                try writeArguments(allocator, w, call.arguments, null);
                try w.writeAll("}<|eot_id|>");
            }
        } else {
            try w.print("<|start_header_id|>{s}<|end_header_id|>\n\n{s}<|eot_id|>", .{ m.role.name(), pyStrip(m.content) });
        }
    }
    try w.writeAll("<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/// The Mistral v3 tokenizer's tool format on the instruct template: the tools
/// in `[AVAILABLE_TOOLS]` before the last user turn, calls as `[TOOL_CALLS]`
/// and a JSON list, results in `[TOOL_RESULTS]`.
fn renderMistralTools(allocator: std.mem.Allocator, w: anytype, messages: []const Message, tools: []const Tool) !void {
    const folded = try foldSystem(allocator, messages);
    defer freeFolded(allocator, folded);
    var last_user: usize = folded.len;
    for (folded, 0..) |m, i| {
        if (m.role == .user) last_user = i;
    }
    try w.writeAll("<s>");
    for (folded, 0..) |m, i| switch (m.role) {
        .user => {
            if (i == last_user and tools.len > 0) {
                try w.writeAll("[AVAILABLE_TOOLS] [");
                for (tools, 0..) |t, j| {
                    if (j > 0) try w.writeAll(", ");
                    try writePyJson(w, t.value, null, 0);
                }
                try w.writeAll("][/AVAILABLE_TOOLS]");
            }
            try w.print("[INST] {s} [/INST]", .{m.content});
        },
        .assistant => {
            if (m.tool_calls.len == 0) {
                try w.print("{s}</s>", .{m.content});
                continue;
            }
            try w.writeAll("[TOOL_CALLS] [");
            for (m.tool_calls, 0..) |call, j| {
                if (j > 0) try w.writeAll(", ");
                try w.writeAll("{\"name\": ");
                try writePyString(w, call.name);
                try w.writeAll(", \"arguments\": ");
                try writeArguments(allocator, w, call.arguments, null);
                try w.writeAll(", \"id\": ");
                try writePyString(w, call.id);
                try w.writeByte('}');
            }
            try w.writeAll("]</s>");
        },
        .tool => {
            try w.writeAll("[TOOL_RESULTS] {\"content\": ");
            try writePyString(w, m.content);
            try w.writeAll(", \"call_id\": ");
            try writePyString(w, m.tool_call_id orelse "");
            try w.writeAll("}[/TOOL_RESULTS]");
        },
        .system => unreachable, // folded away
    };
}

/// Call arguments as a template's `tojson` prints them: the JSON parsed into
/// an object (as hosts hand it to templates), or the text as a JSON string
/// when it is not JSON.
fn writeArguments(allocator: std.mem.Allocator, w: anytype, arguments: []const u8, indent: ?u8) !void {
    const parsed = std.json.parseFromSlice(std.json.Value, allocator, arguments, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return writePyString(w, arguments),
    };
    defer parsed.deinit();
    try writePyJson(w, parsed.value, indent, 0);
}

fn expectRender(template: Template, messages: []const Message, expected: []const u8) !void {
    const got = try render(std.testing.allocator, template, messages);
    defer std.testing.allocator.free(got);
    try std.testing.expectEqualStrings(expected, got);
}

const sys_user = [_]Message{
    .{ .role = .system, .content = "Be brief." },
    .{ .role = .user, .content = " Hi " },
};

test "chatml" {
    try expectRender(.chatml, &sys_user, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n");
}

test "llama-3-chat trims contents and starts with the BOS text" {
    try expectRender(.@"llama-3-chat", &sys_user, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" ++
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

test "llama-2-chat puts the system message inside the first instruction" {
    const messages = [_]Message{
        .{ .role = .system, .content = "Be brief." },
        .{ .role = .user, .content = "Hi" },
        .{ .role = .assistant, .content = "Hello! " },
        .{ .role = .user, .content = "Bye" },
    };
    try expectRender(.@"llama-2-chat", &messages, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]");
}

test "mistral-instruct folds the system message into the first user turn" {
    try expectRender(.@"mistral-instruct", &sys_user, "<s>[INST] Be brief.\n\n Hi  [/INST]");
}

test "gemma-instruct prefixes the first turn with the system text" {
    try expectRender(.@"gemma-instruct", &sys_user, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
}

test "phi-3-chat skips an empty system message" {
    const messages = [_]Message{ .{ .role = .system, .content = "" }, .{ .role = .user, .content = "Hi" } };
    try expectRender(.@"phi-3-chat", &messages, "<|user|>\nHi<|end|>\n<|assistant|>\n");
}

test "zephyr and deepseek-chat" {
    try expectRender(.zephyr, &sys_user, "<|system|>\nBe brief.</s>\n<|user|>\n Hi </s>\n<|assistant|>\n");
    try expectRender(.@"deepseek-chat", &sys_user, "<｜begin▁of▁sentence｜>Be brief.\n\nUser:  Hi \n\nAssistant:");
}

test "every template renders an empty conversation without failing" {
    inline for (std.meta.fields(Template)) |field| {
        const got = try render(std.testing.allocator, @field(Template, field.name), &.{});
        std.testing.allocator.free(got);
    }
}

test "fromName knows every name and nothing else" {
    try std.testing.expectEqual(Template.@"llama-3-chat", Template.fromName("llama-3-chat").?);
    try std.testing.expect(Template.fromName("auto") == null);
    try std.testing.expect(Template.fromName("llama3") == null);
}
