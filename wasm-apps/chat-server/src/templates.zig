//! Prompt templates chosen by name. Each renders exactly what the Jinja chat
//! template of its reference model renders with `add_generation_prompt=True`
//! (tests/test_templates_golden.py holds the real templates and checks this).
//! The `auto` template is not here: the host renders the model's own template.

const std = @import("std");

pub const Role = enum {
    system,
    user,
    assistant,

    pub fn name(self: Role) []const u8 {
        return @tagName(self);
    }
};

pub const Message = struct {
    role: Role,
    content: []const u8,
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
    var out = std.ArrayList(u8).init(allocator);
    errdefer out.deinit();
    const w = out.writer();
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
                .user => try w.print("[INST] {s} [/INST]", .{m.content}),
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
                .user => try w.print("User: {s}\n\n", .{m.content}),
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
            .user => try w.print("<s>[INST] {s} [/INST]", .{pyStrip(content)}),
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
            .assistant => try out.append(.{ .role = .assistant, .content = try allocator.dupe(u8, m.content) }),
        }
    }
    if (has_pending) try out.append(.{ .role = .user, .content = try pending.toOwnedSlice() });
    return out.toOwnedSlice();
}

fn freeFolded(allocator: std.mem.Allocator, messages: []const Message) void {
    for (messages) |m| allocator.free(m.content);
    allocator.free(messages);
}

/// Python's `str.strip()` (used by Jinja's `trim` filter and by `.strip()` in
/// the reference templates): removes Unicode whitespace at both ends.
pub fn pyStrip(text: []const u8) []const u8 {
    var start: usize = 0;
    while (start < text.len) {
        const len = spaceLenAt(text, start);
        if (len == 0) break;
        start += len;
    }
    var end = text.len;
    while (end > start) {
        const len = spaceLenBefore(text[start..end]);
        if (len == 0) break;
        end -= len;
    }
    return text[start..end];
}

fn isPySpace(cp: u21) bool {
    return switch (cp) {
        0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 => true,
        else => false,
    };
}

fn spaceLenAt(text: []const u8, at: usize) usize {
    const len = std.unicode.utf8ByteSequenceLength(text[at]) catch return 0;
    if (at + len > text.len) return 0;
    const cp = std.unicode.utf8Decode(text[at .. at + len]) catch return 0;
    return if (isPySpace(cp)) len else 0;
}

fn spaceLenBefore(text: []const u8) usize {
    var back: usize = 1;
    while (back <= @min(4, text.len)) : (back += 1) {
        const at = text.len - back;
        if (text[at] & 0xC0 == 0x80) continue;
        return if (spaceLenAt(text, at) == back) back else 0;
    }
    return 0;
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

test "pyStrip removes Unicode whitespace like Python" {
    try std.testing.expectEqualStrings("a b", pyStrip(" \t\na b\r\n"));
    try std.testing.expectEqualStrings("x", pyStrip("\u{3000}\u{A0}x\u{2009}"));
    try std.testing.expectEqualStrings("", pyStrip(" \n "));
    try std.testing.expectEqualStrings("é", pyStrip("é"));
}

test "fromName knows every name and nothing else" {
    try std.testing.expectEqual(Template.@"llama-3-chat", Template.fromName("llama-3-chat").?);
    try std.testing.expect(Template.fromName("auto") == null);
    try std.testing.expect(Template.fromName("llama3") == null);
}
