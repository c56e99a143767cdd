//! The function-calling fields of a chat request, in OpenAI's shape: `tools`,
//! `tool_choice`, and the `tool_calls` of earlier assistant messages.

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");

const templates = shared.templates;
const Diagnostic = shared.api_error.Diagnostic;
const Value = std.json.Value;
const typeError = fields.typeError;
const optStringAt = fields.optStringAt;

/// `tool_choice`: whether and which function the model must call.
pub const ToolChoice = union(enum) {
    none,
    auto,
    required,
    /// This function, by name.
    function: []const u8,
};

pub const max_tools = 128;

/// An assistant message's `tool_calls`: `[{id, type:"function", function:{name, arguments}}]`.
pub fn parseToolCalls(arena: std.mem.Allocator, value: ?Value, i: usize, diag: *Diagnostic) ![]const templates.ToolCall {
    var param_buf: [96]u8 = undefined;
    const v = value orelse return &.{};
    const list = switch (v) {
        .null => return &.{},
        .array => |a| a.items,
        else => return typeError(diag, std.fmt.bufPrint(&param_buf, "messages[{d}].tool_calls", .{i}) catch "messages", "an array", v),
    };
    const calls = try arena.alloc(templates.ToolCall, list.len);
    for (list, 0..) |item, j| {
        const at = std.fmt.bufPrint(&param_buf, "messages[{d}].tool_calls[{d}]", .{ i, j }) catch "messages";
        if (item != .object) return typeError(diag, at, "an object", item);
        const o = item.object;
        var sub_buf: [128]u8 = undefined;
        const id_param = std.fmt.bufPrint(&sub_buf, "{s}.id", .{at}) catch at;
        const id = (try optStringAt(o, "id", id_param, diag)) orelse
            return diag.set(400, id_param, null, "Missing required parameter: '{s}'.", .{id_param});
        const type_param = std.fmt.bufPrint(&sub_buf, "{s}.type", .{at}) catch at;
        if (try optStringAt(o, "type", type_param, diag)) |kind| if (!std.mem.eql(u8, kind, "function"))
            return diag.set(400, type_param, null, "Invalid value for '{s}': '{s}'. Supported values are: 'function'.", .{ type_param, kind });
        const fn_param = std.fmt.bufPrint(&sub_buf, "{s}.function", .{at}) catch at;
        const function = o.get("function") orelse
            return diag.set(400, fn_param, null, "Missing required parameter: '{s}'.", .{fn_param});
        if (function != .object) return typeError(diag, fn_param, "an object", function);
        const name_param = std.fmt.bufPrint(&sub_buf, "{s}.function.name", .{at}) catch at;
        const name = (try optStringAt(function.object, "name", name_param, diag)) orelse
            return diag.set(400, name_param, null, "Missing required parameter: '{s}'.", .{name_param});
        const args_param = std.fmt.bufPrint(&sub_buf, "{s}.function.arguments", .{at}) catch at;
        // OpenAI sends and expects the arguments as a JSON string.
        const arguments = (try optStringAt(function.object, "arguments", args_param, diag)) orelse
            return diag.set(400, args_param, null, "Missing required parameter: '{s}' (the arguments as a JSON string).", .{args_param});
        calls[j] = .{ .id = id, .name = name, .arguments = arguments };
    }
    return calls;
}

pub fn isToolName(name: []const u8) bool {
    if (name.len == 0 or name.len > 64) return false;
    for (name) |c| if (!(std.ascii.isAlphanumeric(c) or c == '_' or c == '-')) return false;
    return true;
}

const default_parameters = "{\"type\":\"object\",\"properties\":{}}";

/// `tools`: function tools `{type:"function", function:{name, description, parameters, strict}}`.
pub fn parseTools(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const templates.Tool {
    const v = value orelse return &.{};
    const list = switch (v) {
        .null => return &.{},
        .array => |a| a.items,
        else => return typeError(diag, "tools", "an array", v),
    };
    if (list.len > max_tools) return diag.set(400, "tools", null, "'tools' takes at most {d} functions, not {d}.", .{ max_tools, list.len });
    const tools = try arena.alloc(templates.Tool, list.len);
    var at_buf: [32]u8 = undefined;
    var param_buf: [64]u8 = undefined;
    for (list, 0..) |item, i| {
        const at = std.fmt.bufPrint(&at_buf, "tools[{d}]", .{i}) catch "tools";
        if (item != .object) return typeError(diag, at, "an object", item);
        const o = item.object;
        const type_param = std.fmt.bufPrint(&param_buf, "{s}.type", .{at}) catch at;
        const kind = (try optStringAt(o, "type", type_param, diag)) orelse
            return diag.set(400, type_param, null, "Missing required parameter: '{s}'.", .{type_param});
        if (!std.mem.eql(u8, kind, "function"))
            return diag.set(400, type_param, null, "Invalid value for '{s}': '{s}'. Supported values are: 'function'.", .{ type_param, kind });
        const fn_param = std.fmt.bufPrint(&param_buf, "{s}.function", .{at}) catch at;
        const function = o.get("function") orelse
            return diag.set(400, fn_param, null, "Missing required parameter: '{s}'.", .{fn_param});
        if (function != .object) return typeError(diag, fn_param, "an object", function);
        const f = function.object;
        const name_param = std.fmt.bufPrint(&param_buf, "{s}.function.name", .{at}) catch at;
        const name = (try optStringAt(f, "name", name_param, diag)) orelse
            return diag.set(400, name_param, null, "Missing required parameter: '{s}'.", .{name_param});
        if (!isToolName(name))
            return diag.set(400, name_param, null, "Invalid '{s}': '{s}'. A function name has 1 to 64 characters among a-z, A-Z, 0-9, underscores and dashes.", .{ name_param, name });
        for (tools[0..i]) |earlier| if (std.mem.eql(u8, earlier.name, name))
            return diag.set(400, name_param, null, "Invalid '{s}': the function '{s}' is declared twice.", .{ name_param, name });
        const desc_param = std.fmt.bufPrint(&param_buf, "{s}.function.description", .{at}) catch at;
        const description = try optStringAt(f, "description", desc_param, diag);
        const params_param = std.fmt.bufPrint(&param_buf, "{s}.function.parameters", .{at}) catch at;
        var parameters: []const u8 = default_parameters;
        if (f.get("parameters")) |p| switch (p) {
            .null => {},
            .object => parameters = try std.json.stringifyAlloc(arena, p, .{}),
            else => return typeError(diag, params_param, "an object (a JSON Schema)", p),
        };
        const strict_param = std.fmt.bufPrint(&param_buf, "{s}.function.strict", .{at}) catch at;
        const strict: bool = if (f.get("strict")) |x| switch (x) {
            .null => false,
            .bool => |b| b,
            else => return typeError(diag, strict_param, "a boolean", x),
        } else false;
        tools[i] = .{ .name = name, .description = description, .parameters = parameters, .strict = strict, .value = item };
    }
    return tools;
}

/// `tool_choice`: "none", "auto", "required" or `{type:"function", function:{name}}`.
/// Without it: "auto" when there are tools, else "none" (as OpenAI).
pub fn parseToolChoice(value: ?Value, tools: []const templates.Tool, diag: *Diagnostic) !ToolChoice {
    const v = value orelse Value.null;
    const choice: ToolChoice = switch (v) {
        .null => return if (tools.len > 0) .auto else .none,
        .string => |s| if (std.mem.eql(u8, s, "none")) .none else if (std.mem.eql(u8, s, "auto")) .auto else if (std.mem.eql(u8, s, "required")) .required else
            return diag.set(400, "tool_choice", null, "Invalid value for 'tool_choice': '{s}'. Supported values are: 'none', 'auto', 'required' or an object naming a function.", .{s}),
        .object => |o| blk: {
            const kind = (try optStringAt(o, "type", "tool_choice.type", diag)) orelse
                return diag.set(400, "tool_choice.type", null, "Missing required parameter: 'tool_choice.type'.", .{});
            if (!std.mem.eql(u8, kind, "function"))
                return diag.set(400, "tool_choice.type", null, "Invalid value for 'tool_choice.type': '{s}'. Supported values are: 'function'.", .{kind});
            const function = o.get("function") orelse Value.null;
            if (function != .object) return typeError(diag, "tool_choice.function", "an object", function);
            const name = (try optStringAt(function.object, "name", "tool_choice.function.name", diag)) orelse
                return diag.set(400, "tool_choice.function.name", null, "Missing required parameter: 'tool_choice.function.name'.", .{});
            break :blk .{ .function = name };
        },
        else => return typeError(diag, "tool_choice", "a string or an object", v),
    };
    if (choice == .function or choice == .required) {
        if (tools.len == 0) return diag.set(400, "tool_choice", null, "Invalid value for 'tool_choice': it asks for a function call, but 'tools' declares no functions.", .{});
    }
    if (choice == .function) {
        for (tools) |t| {
            if (std.mem.eql(u8, t.name, choice.function)) break;
        } else return diag.set(400, "tool_choice", null, "Invalid value for 'tool_choice': no function named '{s}' is declared in 'tools'.", .{choice.function});
    }
    return choice;
}
