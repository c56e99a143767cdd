//! The request of the host's `llamaedge.chat_template` import (nn.Backend's
//! renderTemplate), which renders the model's own template:
//! `{"messages":[...],"tools":[...],"chat_template_kwargs":{...},"add_generation_prompt":true}`,
//! the messages in OpenAI's shape (docs/host-interface.md). Also that shape's
//! `tool_calls` list, which the chat server's responses carry too.

const std = @import("std");
const templates = @import("templates.zig");

/// What else the model's own template may be given.
pub const Extras = struct {
    /// Each message's reasoning_content, by index.
    thoughts: []const ?[]const u8 = &.{},
    /// The client's template variables, a JSON object.
    kwargs: ?[]const u8 = null,
};

/// The request for `messages`: calls and results in the messages, and the
/// `tools` (when there are any), each as the client sent it; where there are
/// any, the messages' `reasoning_content` and `"chat_template_kwargs"`.
pub fn append(out: *std.ArrayList(u8), messages: []const templates.Message, tools: []const templates.Tool, extras: Extras) !void {
    const w = out.writer();
    try w.writeAll("{\"messages\":[");
    for (messages, 0..) |m, i| {
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"role\":\"{s}\",\"content\":", .{m.role.name()});
        try std.json.encodeJsonString(m.content, .{}, w);
        if (m.tool_calls.len > 0) {
            try w.writeAll(",\"tool_calls\":");
            try appendToolCalls(w, m.tool_calls);
        }
        if (m.tool_call_id) |id| {
            try w.writeAll(",\"tool_call_id\":");
            try std.json.encodeJsonString(id, .{}, w);
        }
        if (m.name) |name| {
            try w.writeAll(",\"name\":");
            try std.json.encodeJsonString(name, .{}, w);
        }
        if (i < extras.thoughts.len) if (extras.thoughts[i]) |thought| {
            try w.writeAll(",\"reasoning_content\":");
            try std.json.encodeJsonString(thought, .{}, w);
        };
        try w.writeByte('}');
    }
    try w.writeByte(']');
    if (tools.len > 0) {
        try w.writeAll(",\"tools\":[");
        for (tools, 0..) |t, i| {
            if (i > 0) try w.writeByte(',');
            try std.json.stringify(t.value, .{}, w);
        }
        try w.writeByte(']');
    }
    if (extras.kwargs) |k| try w.print(",\"chat_template_kwargs\":{s}", .{k});
    try w.writeAll(",\"add_generation_prompt\":true}");
}

/// OpenAI's list of function calls: `[{"id","type":"function","function":{"name","arguments"}}]`,
/// the arguments as a JSON string.
pub fn appendToolCalls(w: anytype, calls: []const templates.ToolCall) !void {
    try w.writeByte('[');
    for (calls, 0..) |c, i| {
        if (i > 0) try w.writeByte(',');
        try w.writeAll("{\"id\":");
        try std.json.encodeJsonString(c.id, .{}, w);
        try w.writeAll(",\"type\":\"function\",\"function\":{\"name\":");
        try std.json.encodeJsonString(c.name, .{}, w);
        try w.writeAll(",\"arguments\":");
        try std.json.encodeJsonString(c.arguments, .{}, w);
        try w.writeAll("}}");
    }
    try w.writeByte(']');
}

test "the request carries the messages in OpenAI's shape, the thoughts and the template variables" {
    var out = std.ArrayList(u8).init(std.testing.allocator);
    defer out.deinit();
    const calls = [_]templates.ToolCall{.{ .id = "call_1", .name = "f", .arguments = "{\"a\":\"\\\"\"}" }};
    const messages = [_]templates.Message{
        .{ .role = .user, .content = "q \"1\"" },
        .{ .role = .assistant, .content = "", .tool_calls = &calls },
        .{ .role = .tool, .content = "r", .tool_call_id = "call_1", .name = "f" },
    };
    try append(&out, &messages, &.{}, .{ .thoughts = &.{ null, "why" }, .kwargs = "{\"enable_thinking\":false}" });
    try std.testing.expectEqualStrings("{\"messages\":[{\"role\":\"user\",\"content\":\"q \\\"1\\\"\"}," ++
        "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\\\"\\\\\\\"\\\"}\"}}],\"reasoning_content\":\"why\"}," ++
        "{\"role\":\"tool\",\"content\":\"r\",\"tool_call_id\":\"call_1\",\"name\":\"f\"}]," ++
        "\"chat_template_kwargs\":{\"enable_thinking\":false},\"add_generation_prompt\":true}", out.items);
}
