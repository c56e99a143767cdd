//! OpenAI's Responses API, the request's items (`input`, and a stored
//! conversation's): messages, function calls and their outputs, reasoning,
//! translated into the chat path's messages. Errors name the item's path
//! (`input[2].call_id`).

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");
const chat_request = @import("../chat/request.zig");

const templates = shared.templates;
const Diagnostic = shared.api_error.Diagnostic;
const Message = templates.Message;
const Value = std.json.Value;
const typeError = fields.typeError;

/// `input` as items: a string is one user message item.
pub fn inputItems(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const Value {
    const v = value orelse return diag.set(400, "input", null, "Missing required parameter: 'input'.", .{});
    switch (v) {
        .string => |s| {
            var part = std.json.ObjectMap.init(arena);
            try part.put("type", .{ .string = "input_text" });
            try part.put("text", .{ .string = s });
            var parts = std.json.Array.init(arena);
            try parts.append(.{ .object = part });
            var message = std.json.ObjectMap.init(arena);
            try message.put("type", .{ .string = "message" });
            try message.put("role", .{ .string = "user" });
            try message.put("content", .{ .array = parts });
            return arena.dupe(Value, &.{.{ .object = message }});
        },
        .array => |a| {
            if (a.items.len == 0) return diag.set(400, "input", null, "Invalid 'input': an empty array. Send a string or at least one item.", .{});
            return a.items;
        },
        else => return typeError(diag, "input", "a string or an array of items", v),
    }
}

/// Items: messages (with `input_text` / `output_text` parts or a string),
/// `function_call`, `function_call_output` and `reasoning`, named in errors
/// as `{name}[i]`. A reasoning item's text goes with the next assistant turn
/// as its reasoning (`thoughts`, by message index), as `reasoning_content`
/// does on the chat path. Consecutive function calls join the assistant turn
/// before them, as one assistant message with tool calls.
pub fn parseItems(arena: std.mem.Allocator, items: []const Value, name: []const u8, out: *std.ArrayList(Message), thoughts: *std.ArrayList(?[]const u8), image_parts: *chat_request.ImageParts, diag: *Diagnostic) !void {
    var at_buf: [48]u8 = undefined;
    var param_buf: [96]u8 = undefined;
    var pending_thought: ?[]const u8 = null;
    // The assistant message that function calls join: the last one, while
    // nothing but calls came after it.
    var open_turn: ?usize = null;
    for (items, 0..) |item, i| {
        const at = std.fmt.bufPrint(&at_buf, "{s}[{d}]", .{ name, i }) catch name;
        if (item != .object) return typeError(diag, at, "an object", item);
        const o = item.object;
        const type_param = std.fmt.bufPrint(&param_buf, "{s}.type", .{at}) catch at;
        // A message may leave out its type (EasyInputMessage).
        const kind = (try fields.optStringAt(o, "type", type_param, diag)) orelse "message";
        if (std.mem.eql(u8, kind, "message")) {
            const role_param = std.fmt.bufPrint(&param_buf, "{s}.role", .{at}) catch at;
            const role_text = (try fields.optStringAt(o, "role", role_param, diag)) orelse
                return diag.set(400, role_param, null, "Missing required parameter: '{s}'.", .{role_param});
            const role: templates.Role = if (std.mem.eql(u8, role_text, "user")) .user else if (std.mem.eql(u8, role_text, "assistant")) .assistant else if (std.mem.eql(u8, role_text, "system") or std.mem.eql(u8, role_text, "developer")) .system else
                return diag.set(400, role_param, null, "Invalid value for '{s}': '{s}'. Supported values are: 'user', 'assistant', 'system' and 'developer'.", .{ role_param, role_text });
            const content = try contentText(arena, o.get("content"), at, role, image_parts, diag);
            try out.append(.{ .role = role, .content = content });
            open_turn = if (role == .assistant) out.items.len - 1 else null;
            if (role == .assistant) try attachThought(thoughts, out.items.len - 1, &pending_thought);
        } else if (std.mem.eql(u8, kind, "function_call")) {
            const call = templates.ToolCall{
                .id = try required(o, "call_id", at, &param_buf, diag),
                .name = try required(o, "name", at, &param_buf, diag),
                .arguments = try required(o, "arguments", at, &param_buf, diag),
            };
            // The arguments go to the template as JSON; say so here rather than fail there.
            if (!try isJson(arena, call.arguments)) {
                const p = std.fmt.bufPrint(&param_buf, "{s}.arguments", .{at}) catch at;
                return diag.set(400, p, null, "Invalid '{s}': the arguments must be a JSON object, as text.", .{p});
            }
            if (open_turn) |turn| {
                const calls = try std.mem.concat(arena, templates.ToolCall, &.{ out.items[turn].tool_calls, &.{call} });
                out.items[turn].tool_calls = calls;
            } else {
                try out.append(.{ .role = .assistant, .content = "", .tool_calls = try arena.dupe(templates.ToolCall, &.{call}) });
                open_turn = out.items.len - 1;
                try attachThought(thoughts, out.items.len - 1, &pending_thought);
            }
        } else if (std.mem.eql(u8, kind, "function_call_output")) {
            const id = try required(o, "call_id", at, &param_buf, diag);
            if (!hasCall(out.items, id)) {
                const p = std.fmt.bufPrint(&param_buf, "{s}.call_id", .{at}) catch at;
                return diag.set(400, p, null, "Invalid '{s}': no function_call item before it has the call_id '{s}'. A function_call_output answers an earlier function_call.", .{ p, id });
            }
            const output_param = std.fmt.bufPrint(&param_buf, "{s}.output", .{at}) catch at;
            const result = o.get("output") orelse return diag.set(400, output_param, null, "Missing required parameter: '{s}'.", .{output_param});
            const text = switch (result) {
                .string => |s| s,
                .array => try contentText(arena, result, output_param, .tool, image_parts, diag),
                else => return typeError(diag, output_param, "a string or an array of content parts", result),
            };
            try out.append(.{ .role = .tool, .content = text, .tool_call_id = id });
            open_turn = null;
        } else if (std.mem.eql(u8, kind, "reasoning")) {
            pending_thought = try reasoningText(arena, o, at, diag);
        } else {
            return diag.set(400, type_param, null, "Invalid value for '{s}': '{s}'. This server takes the item types 'message', 'function_call', 'function_call_output' and 'reasoning'.", .{ type_param, kind });
        }
    }
}

/// A reasoning item's text: its `content` (reasoning_text parts), else its
/// `summary` (summary_text parts); null when neither has any (an item with
/// only `encrypted_content`, which this server cannot read).
fn reasoningText(arena: std.mem.Allocator, o: std.json.ObjectMap, at: []const u8, diag: *Diagnostic) !?[]const u8 {
    var param_buf: [96]u8 = undefined;
    for ([_][]const u8{ "content", "summary" }) |key| {
        const v = o.get(key) orelse continue;
        const param = std.fmt.bufPrint(&param_buf, "{s}.{s}", .{ at, key }) catch at;
        const parts = switch (v) {
            .null => continue,
            .array => |a| a.items,
            else => return typeError(diag, param, "an array", v),
        };
        var text = std.ArrayList(u8).init(arena);
        for (parts, 0..) |part, j| {
            const t = if (part == .object) part.object.get("text") orelse Value.null else Value.null;
            if (t != .string) {
                const p = std.fmt.bufPrint(&param_buf, "{s}.{s}[{d}].text", .{ at, key, j }) catch at;
                return diag.set(400, p, null, "Missing required parameter: '{s}'.", .{p});
            }
            if (text.items.len > 0) try text.append('\n');
            try text.appendSlice(t.string);
        }
        if (text.items.len > 0) return text.items;
    }
    return null;
}

fn attachThought(thoughts: *std.ArrayList(?[]const u8), index: usize, pending: *?[]const u8) !void {
    const thought = pending.* orelse return;
    try thoughts.appendNTimes(null, index - thoughts.items.len);
    try thoughts.append(thought);
    pending.* = null;
}

pub fn required(o: std.json.ObjectMap, key: []const u8, at: []const u8, param_buf: *[96]u8, diag: *Diagnostic) ![]const u8 {
    const param = std.fmt.bufPrint(param_buf, "{s}.{s}", .{ at, key }) catch at;
    return (try fields.optStringAt(o, key, param, diag)) orelse diag.set(400, param, null, "Missing required parameter: '{s}'.", .{param});
}

fn isJson(arena: std.mem.Allocator, text: []const u8) !bool {
    const v = std.json.parseFromSliceLeaky(Value, arena, text, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return false,
    };
    return v == .object;
}

fn hasCall(messages: []const Message, id: []const u8) bool {
    for (messages) |m| for (m.tool_calls) |c| if (std.mem.eql(u8, c.id, id)) return true;
    return false;
}

/// A message's content: a string, or parts of text (`input_text`, and on
/// assistant turns `output_text` and `refusal`) and, in user turns,
/// `input_image` parts with a data URL (each as its tag: images.zig), joined
/// with newlines.
fn contentText(arena: std.mem.Allocator, value: ?Value, at: []const u8, role: templates.Role, image_parts: *chat_request.ImageParts, diag: *Diagnostic) ![]const u8 {
    var param_buf: [96]u8 = undefined;
    const param = if (role == .tool) at else std.fmt.bufPrint(&param_buf, "{s}.content", .{at}) catch at;
    const v = value orelse return diag.set(400, param, null, "Missing required parameter: '{s}'.", .{param});
    const parts = switch (v) {
        .string => |s| return s,
        .array => |a| a.items,
        else => return typeError(diag, param, "a string or an array of content parts", v),
    };
    var text = std.ArrayList(u8).init(arena);
    var part_buf: [128]u8 = undefined;
    for (parts, 0..) |part, j| {
        const part_at = std.fmt.bufPrint(&part_buf, "{s}[{d}]", .{ param, j }) catch param;
        if (part != .object) return typeError(diag, part_at, "an object", part);
        const kind_value = part.object.get("type") orelse Value.null;
        if (kind_value != .string) return diag.set(400, part_at, null, "Missing required parameter: '{s}.type'.", .{part_at});
        const kind = kind_value.string;
        if (role == .user and std.mem.eql(u8, kind, "input_image")) {
            if (text.items.len > 0) try text.append('\n');
            try text.appendSlice(try inputImage(arena, part.object, part_at, image_parts, diag));
            continue;
        }
        const key = if (std.mem.eql(u8, kind, "refusal")) "refusal" else "text";
        const textual = std.mem.eql(u8, kind, "input_text") or std.mem.eql(u8, kind, "output_text") or std.mem.eql(u8, kind, "refusal");
        if (!textual) return diag.set(400, part_at, null, "Invalid value for '{s}.type': '{s}'. This server takes 'input_text' and, in user messages, 'input_image' (and 'output_text' in assistant turns).", .{ part_at, kind });
        const t = part.object.get(key) orelse Value.null;
        if (t != .string) return diag.set(400, part_at, null, "Missing required parameter: '{s}.{s}'.", .{ part_at, key });
        if (text.items.len > 0) try text.append('\n');
        try text.appendSlice(t.string);
    }
    return text.items;
}

/// An `input_image` part's `image_url` (a data URL; `file_id` is refused: this
/// server keeps no files) as its tag.
fn inputImage(arena: std.mem.Allocator, part: std.json.ObjectMap, at: []const u8, seen: *chat_request.ImageParts, diag: *Diagnostic) ![]const u8 {
    var param_buf: [160]u8 = undefined;
    const param = std.fmt.bufPrint(&param_buf, "{s}.image_url", .{at}) catch at;
    const url = (try fields.optStringAt(part, "image_url", param, diag)) orelse
        return diag.set(400, param, null, "Missing required parameter: '{s}'. This server takes images as data URLs, not file ids.", .{param});
    return seen.tag(arena, url, .url, param, "", diag);
}
