//! The OpenAI chat completions API as data: the request body parsed and
//! checked into a `ChatRequest`, and the JSON of responses, stream chunks,
//! errors and the WASI-NN metadata built from a request. Pure translation: no
//! I/O, no model.

const std = @import("std");
const templates = @import("templates.zig");
const reasoning = @import("reasoning.zig");

const Message = templates.Message;
const Value = std.json.Value;

/// An error as the API reports it: `{"error":{message,type,param,code}}`.
pub const ApiError = struct {
    status: u16,
    message: []const u8,
    kind: []const u8 = "invalid_request_error",
    param: ?[]const u8 = null,
    code: ?[]const u8 = null,
};

/// Where a parse failure is described. The text lives in fixed buffers so
/// that reporting an error never needs the allocator.
pub const Diagnostic = struct {
    err: ApiError = .{ .status = 400, .message = "" },
    message_buf: [768]u8 = undefined,
    param_buf: [96]u8 = undefined,

    pub fn set(self: *Diagnostic, status: u16, param: ?[]const u8, code: ?[]const u8, comptime fmt: []const u8, args: anytype) error{InvalidRequest} {
        const message = std.fmt.bufPrint(&self.message_buf, fmt, args) catch blk: {
            const ellipsis = "...";
            @memcpy(self.message_buf[self.message_buf.len - ellipsis.len ..], ellipsis);
            break :blk self.message_buf[0..];
        };
        var param_copy: ?[]const u8 = null;
        if (param) |p| {
            const len = @min(p.len, self.param_buf.len);
            @memcpy(self.param_buf[0..len], p[0..len]);
            param_copy = self.param_buf[0..len];
        }
        self.err = .{ .status = status, .message = message, .param = param_copy, .code = code };
        return error.InvalidRequest;
    }
};

pub const ResponseFormat = union(enum) {
    text,
    json_object,
    /// The JSON schema, serialized.
    json_schema: []const u8,
};

pub const Finish = enum { stop, length, tool_calls };

/// `tool_choice`: whether and which function the model must call.
pub const ToolChoice = union(enum) {
    none,
    auto,
    required,
    /// This function, by name.
    function: []const u8,
};

/// The most choices one request may ask for (`n`).
pub const max_choices = 8;
/// OpenAI's limits on `top_logprobs` and on the number of tools.
pub const max_top_logprobs = 20;
pub const max_tools = 128;

pub const ChatRequest = struct {
    arena: std.heap.ArenaAllocator,
    model: ?[]const u8 = null,
    messages: []Message = &.{},
    stream: bool = false,
    include_usage: bool = false,
    max_tokens: ?u32 = null,
    temperature: ?f64 = null,
    top_p: ?f64 = null,
    /// Anthropic's `top_k` (the OpenAI API has none).
    top_k: ?u32 = null,
    seed: ?i64 = null,
    presence_penalty: ?f64 = null,
    frequency_penalty: ?f64 = null,
    stop: []const []const u8 = &.{},
    response_format: ResponseFormat = .text,
    tools: []const templates.Tool = &.{},
    tool_choice: ToolChoice = .none,
    parallel_tool_calls: bool = true,
    n: u8 = 1,
    logprobs: bool = false,
    top_logprobs: u8 = 0,
    /// The bias object with token-id keys, serialized; null without one.
    logit_bias: ?[]const u8 = null,
    /// Extra variables for the model's own template, a JSON object (see reasoning.zig).
    template_kwargs: ?[]const u8 = null,
    /// Each message's reasoning_content, by index (null for most).
    reasoning: []const ?[]const u8 = &.{},

    pub fn deinit(self: *ChatRequest) void {
        self.arena.deinit();
    }
};

pub const max_stop_strings = 4;

/// The request body as a JSON object, in `arena`; malformed JSON is a 400.
pub fn parseObject(arena: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !std.json.ObjectMap {
    const root = std.json.parseFromSliceLeaky(Value, arena, body, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return diag.set(400, null, null, "We could not parse the JSON body of your request ({s}). The body must be a JSON object.", .{switch (err) {
            error.DuplicateField => "a field appears twice",
            error.ValueTooLong => "a value is too long",
            else => "it is not valid JSON",
        }}),
    };
    if (root != .object) return diag.set(400, null, null, "The request body must be a JSON object, not {s}.", .{typeName(root)});
    return root.object;
}

/// Parses and checks a chat completions request body. On error.InvalidRequest
/// `diag.err` says what is wrong. Fields this server does not know are ignored;
/// fields it knows but cannot honour are refused rather than dropped.
pub fn parseChatRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !ChatRequest {
    var req = ChatRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();

    const obj = try parseObject(arena, body, diag);

    req.model = try optString(obj, "model", diag);
    req.messages = try parseMessages(arena, obj.get("messages"), diag);
    req.stream = (try optBool(obj, "stream", diag)) orelse false;
    if (obj.get("stream_options")) |options| switch (options) {
        .null => {},
        .object => |o| req.include_usage = (try optBool(o, "include_usage", diag)) orelse false,
        else => return typeError(diag, "stream_options", "an object", options),
    };

    const max_completion = try optCount(obj, "max_completion_tokens", diag);
    req.max_tokens = max_completion orelse try optCount(obj, "max_tokens", diag);
    req.temperature = try optNumberIn(obj, "temperature", 0, 2, diag);
    req.top_p = try optNumberIn(obj, "top_p", 0, 1, diag);
    req.presence_penalty = try optNumberIn(obj, "presence_penalty", -2, 2, diag);
    req.frequency_penalty = try optNumberIn(obj, "frequency_penalty", -2, 2, diag);
    req.seed = try optInteger(obj, "seed", diag);
    req.stop = try parseStop(arena, obj.get("stop"), diag);
    req.response_format = try parseResponseFormat(arena, obj.get("response_format"), diag);
    req.tools = try parseTools(arena, obj.get("tools"), diag);
    req.tool_choice = try parseToolChoice(obj.get("tool_choice"), req.tools, diag);
    req.parallel_tool_calls = (try optBool(obj, "parallel_tool_calls", diag)) orelse true;
    if (req.tool_choice != .none and req.response_format != .text)
        return diag.set(400, "response_format", null, "'response_format' cannot be combined with 'tools' on this server: the function-call grammar and the response grammar would conflict. Send one of them, or set 'tool_choice' to 'none'.", .{});
    if (try optInteger(obj, "n", diag)) |n| {
        if (n < 1 or n > max_choices)
            return diag.set(400, "n", null, "Invalid 'n': {d}. This server generates between 1 and {d} choices per request.", .{ n, max_choices });
        req.n = @intCast(n);
    }
    req.logprobs = (try optBool(obj, "logprobs", diag)) orelse false;
    if (try optInteger(obj, "top_logprobs", diag)) |k| {
        if (k < 0 or k > max_top_logprobs)
            return diag.set(400, "top_logprobs", null, "Invalid 'top_logprobs': {d}. It must be between 0 and {d}.", .{ k, max_top_logprobs });
        if (!req.logprobs and k > 0)
            return diag.set(400, "top_logprobs", null, "'top_logprobs' needs 'logprobs' set to true.", .{});
        req.top_logprobs = @intCast(k);
    }
    req.logit_bias = try parseLogitBias(arena, obj.get("logit_bias"), diag);
    req.template_kwargs = try reasoning.parseTemplateKwargs(arena, obj, diag);
    req.reasoning = try reasoning.parseHistory(arena, obj, diag);
    try refuseUnsupported(obj, diag);
    try checkToolHistory(req.messages, diag);
    return req;
}

fn parseMessages(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]Message {
    const v = value orelse return diag.set(400, "messages", null, "Missing required parameter: 'messages'.", .{});
    if (v != .array) return typeError(diag, "messages", "an array", v);
    const items = v.array.items;
    if (items.len == 0) return diag.set(400, "messages", null, "'messages' must contain at least one message.", .{});

    const messages = try arena.alloc(Message, items.len);
    var param_buf: [64]u8 = undefined;
    for (items, 0..) |item, i| {
        const at = std.fmt.bufPrint(&param_buf, "messages[{d}]", .{i}) catch "messages";
        if (item != .object) return typeError(diag, at, "an object", item);
        const role_param = std.fmt.bufPrint(&param_buf, "messages[{d}].role", .{i}) catch "messages";
        const role_value = item.object.get("role") orelse
            return diag.set(400, role_param, null, "Missing required parameter: '{s}'.", .{role_param});
        if (role_value != .string) return typeError(diag, role_param, "a string", role_value);
        const role = parseRole(role_value.string) orelse {
            if (std.mem.eql(u8, role_value.string, "function"))
                return diag.set(400, role_param, null, "Messages with role 'function' (the deprecated function-calling API) are not supported: send 'tool' messages with a 'tool_call_id'.", .{});
            return diag.set(400, role_param, null, "Invalid value for '{s}': '{s}'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.", .{ role_param, role_value.string });
        };
        const o = item.object;
        var m = Message{ .role = role, .content = "" };
        if (role == .assistant) m.tool_calls = try parseToolCalls(arena, o.get("tool_calls"), i, diag);
        const content_param = std.fmt.bufPrint(&param_buf, "messages[{d}].content", .{i}) catch "messages";
        m.content = try parseContent(arena, o.get("content"), role, content_param, diag);
        const name_param = std.fmt.bufPrint(&param_buf, "messages[{d}].name", .{i}) catch "messages";
        m.name = try optStringAt(o, "name", name_param, diag);
        if (role == .tool) {
            const id_param = std.fmt.bufPrint(&param_buf, "messages[{d}].tool_call_id", .{i}) catch "messages";
            m.tool_call_id = (try optStringAt(o, "tool_call_id", id_param, diag)) orelse
                return diag.set(400, id_param, null, "Missing required parameter: '{s}'. A tool message answers a call by its id.", .{id_param});
        }
        messages[i] = m;
    }
    return messages;
}

fn parseRole(text: []const u8) ?templates.Role {
    if (std.mem.eql(u8, text, "developer")) return .system; // OpenAI's newer name for the system role
    return std.meta.stringToEnum(templates.Role, text);
}

fn optStringAt(obj: std.json.ObjectMap, key: []const u8, param: []const u8, diag: *Diagnostic) !?[]const u8 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .string => |s| s,
        else => typeError(diag, param, "a string", v),
    };
}

/// An assistant message's `tool_calls`: `[{id, type:"function", function:{name, arguments}}]`.
fn parseToolCalls(arena: std.mem.Allocator, value: ?Value, i: usize, diag: *Diagnostic) ![]const templates.ToolCall {
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

/// Each tool message answers a call made by an earlier assistant message.
fn checkToolHistory(messages: []const Message, diag: *Diagnostic) !void {
    for (messages, 0..) |m, i| {
        if (m.role != .tool) continue;
        const id = m.tool_call_id.?;
        var found = false;
        for (messages[0..i]) |earlier| {
            for (earlier.tool_calls) |call| found = found or std.mem.eql(u8, call.id, id);
        }
        if (!found) {
            var param_buf: [64]u8 = undefined;
            const param = std.fmt.bufPrint(&param_buf, "messages[{d}].tool_call_id", .{i}) catch "messages";
            return diag.set(400, param, null, "Invalid parameter: '{s}' is '{s}', but no earlier assistant message has a tool call with that id. A message with role 'tool' must answer a preceding message's 'tool_calls'.", .{ param, id });
        }
    }
}

fn isToolName(name: []const u8) bool {
    if (name.len == 0 or name.len > 64) return false;
    for (name) |c| if (!(std.ascii.isAlphanumeric(c) or c == '_' or c == '-')) return false;
    return true;
}

const default_parameters = "{\"type\":\"object\",\"properties\":{}}";

/// `tools`: function tools `{type:"function", function:{name, description, parameters, strict}}`.
fn parseTools(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const templates.Tool {
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
fn parseToolChoice(value: ?Value, tools: []const templates.Tool, diag: *Diagnostic) !ToolChoice {
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

/// `logit_bias`: token ids (as decimal strings) to biases between -100 and 100.
fn parseLogitBias(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) !?[]const u8 {
    const v = value orelse return null;
    const o = switch (v) {
        .null => return null,
        .object => |o| o,
        else => return typeError(diag, "logit_bias", "an object", v),
    };
    if (o.count() == 0) return null;
    var out = std.ArrayList(u8).init(arena);
    const w = out.writer();
    try w.writeByte('{');
    var it = o.iterator();
    var i: usize = 0;
    while (it.next()) |entry| : (i += 1) {
        const key = entry.key_ptr.*;
        const id = std.fmt.parseInt(u32, key, 10) catch
            return diag.set(400, "logit_bias", null, "Invalid 'logit_bias': the key '{s}' is not a token id (a non-negative integer, as a string).", .{key});
        const bias: f64 = switch (entry.value_ptr.*) {
            .integer => |x| @floatFromInt(x),
            .float => |x| x,
            else => return diag.set(400, "logit_bias", null, "Invalid 'logit_bias': the bias of token {s} must be a number.", .{key}),
        };
        if (!(bias >= -100 and bias <= 100))
            return diag.set(400, "logit_bias", null, "Invalid 'logit_bias': the bias of token {s} is {d}; it must be between -100 and 100.", .{ key, bias });
        if (i > 0) try w.writeByte(',');
        try w.print("\"{d}\":{d}", .{ id, bias });
    }
    try w.writeByte('}');
    return out.items;
}

/// A string, or an array of `{type:"text",text}` parts joined with newlines.
fn parseContent(arena: std.mem.Allocator, value: ?Value, role: templates.Role, param: []const u8, diag: *Diagnostic) ![]const u8 {
    const v = value orelse Value.null;
    switch (v) {
        .string => |s| return s,
        // An assistant turn that only called a tool has no content.
        .null => if (role == .assistant) return "" else return diag.set(400, param, null, "Missing required parameter: '{s}'.", .{param}),
        .array => |parts| {
            var text = std.ArrayList(u8).init(arena);
            for (parts.items, 0..) |part, j| {
                var part_buf: [96]u8 = undefined;
                const part_param = std.fmt.bufPrint(&part_buf, "{s}[{d}]", .{ param, j }) catch param;
                if (part != .object) return typeError(diag, part_param, "an object", part);
                const kind = part.object.get("type") orelse Value.null;
                if (kind != .string) return typeError(diag, part_param, "a content part with a string 'type'", kind);
                if (!std.mem.eql(u8, kind.string, "text"))
                    return diag.set(400, part_param, null, "Content parts of type '{s}' are not supported: this model takes text only.", .{kind.string});
                const part_text = part.object.get("text") orelse Value.null;
                if (part_text != .string) return typeError(diag, part_param, "a text part with a string 'text'", part_text);
                if (j > 0) try text.append('\n');
                try text.appendSlice(part_text.string);
            }
            return text.items;
        },
        else => return typeError(diag, param, "a string or an array of content parts", v),
    }
}

pub fn parseStop(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const []const u8 {
    const v = value orelse return &.{};
    switch (v) {
        .null => return &.{},
        .string => |s| {
            const one = try arena.alloc([]const u8, 1);
            one[0] = s;
            return if (s.len == 0) &.{} else one;
        },
        .array => |list| {
            if (list.items.len > max_stop_strings)
                return diag.set(400, "stop", null, "'stop' takes at most {d} sequences, not {d}.", .{ max_stop_strings, list.items.len });
            var stops = std.ArrayList([]const u8).init(arena);
            for (list.items) |item| {
                if (item != .string) return typeError(diag, "stop", "a string or an array of strings", item);
                if (item.string.len > 0) try stops.append(item.string);
            }
            return stops.items;
        },
        else => return typeError(diag, "stop", "a string or an array of strings", v),
    }
}

fn parseResponseFormat(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) !ResponseFormat {
    const v = value orelse return .text;
    if (v == .null) return .text;
    if (v != .object) return typeError(diag, "response_format", "an object", v);
    const kind = v.object.get("type") orelse return diag.set(400, "response_format", null, "Missing required parameter: 'response_format.type'.", .{});
    if (kind != .string) return typeError(diag, "response_format.type", "a string", kind);
    if (std.mem.eql(u8, kind.string, "text")) return .text;
    if (std.mem.eql(u8, kind.string, "json_object")) return .json_object;
    if (std.mem.eql(u8, kind.string, "json_schema")) {
        const spec = v.object.get("json_schema") orelse Value.null;
        if (spec != .object) return typeError(diag, "response_format.json_schema", "an object", spec);
        const schema = spec.object.get("schema") orelse Value.null;
        if (schema != .object) return typeError(diag, "response_format.json_schema.schema", "an object (a JSON schema)", schema);
        return .{ .json_schema = try std.json.stringifyAlloc(arena, schema, .{}) };
    }
    return diag.set(400, "response_format.type", null, "Invalid value for 'response_format.type': '{s}'. Supported values are: 'text', 'json_object' and 'json_schema'.", .{kind.string});
}

/// Fields whose meaning this server cannot honour: refusing them is better
/// than answering something else than what was asked.
fn refuseUnsupported(obj: std.json.ObjectMap, diag: *Diagnostic) !void {
    if (try nonEmptyArray(obj, "functions", diag))
        return diag.set(400, "functions", null, "'functions' (the deprecated function-calling API) is not supported: declare the functions in 'tools'.", .{});
    if (obj.get("function_call")) |v| if (v != .null)
        return diag.set(400, "function_call", null, "'function_call' (the deprecated function-calling API) is not supported: use 'tool_choice'.", .{});
}

fn nonEmptyArray(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !bool {
    const v = obj.get(key) orelse return false;
    return switch (v) {
        .null => false,
        .array => |a| a.items.len > 0,
        else => typeError(diag, key, "an array", v),
    };
}

pub fn optString(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?[]const u8 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .string => |s| s,
        else => typeError(diag, key, "a string", v),
    };
}

pub fn optBool(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?bool {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .bool => |b| b,
        else => typeError(diag, key, "a boolean", v),
    };
}

pub fn optInteger(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?i64 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .integer => |i| i,
        .float => |f| if (@floor(f) == f and @abs(f) < 9.0e15) @as(i64, @intFromFloat(f)) else typeError(diag, key, "an integer", v),
        else => typeError(diag, key, "an integer", v),
    };
}

/// A token count: an integer of at least 1.
pub fn optCount(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?u32 {
    const n = (try optInteger(obj, key, diag)) orelse return null;
    if (n < 1) return diag.set(400, key, null, "Invalid '{s}': {d}. It must be at least 1.", .{ key, n });
    return @intCast(@min(n, std.math.maxInt(u32)));
}

pub fn optNumberIn(obj: std.json.ObjectMap, key: []const u8, min: f64, max: f64, diag: *Diagnostic) !?f64 {
    const v = obj.get(key) orelse return null;
    const x: f64 = switch (v) {
        .null => return null,
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        else => return typeError(diag, key, "a number", v),
    };
    if (!(x >= min and x <= max))
        return diag.set(400, key, null, "Invalid '{s}': {d}. It must be between {d} and {d}.", .{ key, x, min, max });
    return x;
}

pub fn typeError(diag: *Diagnostic, param: []const u8, expected: []const u8, got: Value) error{InvalidRequest} {
    return diag.set(400, param, null, "Invalid type for '{s}': expected {s}, but got {s}.", .{ param, expected, typeName(got) });
}

pub fn typeName(v: Value) []const u8 {
    return switch (v) {
        .null => "null",
        .bool => "a boolean",
        .integer, .float, .number_string => "a number",
        .string => "a string",
        .array => "an array",
        .object => "an object",
    };
}

// ---------------------------------------------------------------------------
// Metadata for the WASI-NN backend

/// A GBNF grammar that admits one JSON object (response_format json_object).
/// Whitespace runs are bounded so that sampling cannot wander off in blanks.
pub const json_object_grammar =
    \\root ::= object
    \\object ::= "{" ws ( member ( "," ws member )* )? "}" ws
    \\member ::= string ":" ws value
    \\array ::= "[" ws ( value ( "," ws value )* )? "]" ws
    \\value ::= object | array | string | number | ( "true" | "false" | "null" ) ws
    \\string ::= "\"" char* "\"" ws
    \\char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] )
    \\number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )? ws
    \\ws ::= [ \t\n]{0,16}
;

/// A grammar from a JSON Schema wrapped in literal text (the `grammar-prefix`,
/// `grammar-suffix` and `grammar-triggers` extensions), for function calls.
pub const Constraint = struct {
    /// The JSON Schema, serialized.
    schema: []const u8,
    prefix: []const u8 = "",
    suffix: []const u8 = "",
    /// Non-empty: the grammar is lazy, armed when the model writes one of these.
    triggers: []const []const u8 = &.{},
};

pub const MetadataOptions = struct {
    n_predict: ?u32 = null,
    /// Replaces the response_format grammar (the parser refuses both together).
    constraint: ?Constraint = null,
    /// Which choice of `n` this context generates: its seed is `seed + choice`.
    choice: u8 = 0,
    /// Markers the host writes into the text even when they are control tokens
    /// (`preserved-tokens`, an extension).
    preserved: []const []const u8 = &.{},
};

/// The metadata JSON (`set_input` index 1) for a request: sampling options,
/// the token limit and the output constraint. Keys follow WasmEdge's names.
pub fn appendMetadata(out: *std.ArrayList(u8), req: *const ChatRequest, opts: MetadataOptions) !void {
    const w = out.writer();
    var first = true;
    try w.writeByte('{');
    if (opts.n_predict) |n| try field(w, &first, "n-predict", n);
    if (req.temperature) |x| try field(w, &first, "temp", x);
    if (req.top_p) |x| try field(w, &first, "top-p", x);
    if (req.top_k) |x| try field(w, &first, "top-k", x);
    if (req.seed) |x| try field(w, &first, "seed", x +% opts.choice);
    if (req.presence_penalty) |x| try field(w, &first, "presence-penalty", x);
    if (req.frequency_penalty) |x| try field(w, &first, "frequency-penalty", x);
    if (req.logprobs) {
        try rawField(w, &first, "logprobs", "true");
        try field(w, &first, "top-logprobs", req.top_logprobs);
    }
    if (req.logit_bias) |bias| try rawField(w, &first, "logit-bias", bias);
    if (opts.constraint) |c| {
        try field(w, &first, "json-schema", c.schema);
        if (c.prefix.len > 0) try field(w, &first, "grammar-prefix", c.prefix);
        if (c.suffix.len > 0) try field(w, &first, "grammar-suffix", c.suffix);
        if (c.triggers.len > 0) {
            try rawField(w, &first, "grammar-triggers", "[");
            for (c.triggers, 0..) |t, i| {
                if (i > 0) try w.writeByte(',');
                try std.json.encodeJsonString(t, .{}, w);
            }
            try w.writeByte(']');
        }
    } else switch (req.response_format) {
        .text => {},
        .json_object => try field(w, &first, "grammar", @as([]const u8, json_object_grammar)),
        // WasmEdge takes the schema as a string holding JSON.
        .json_schema => |schema| try field(w, &first, "json-schema", schema),
    }
    if (opts.preserved.len > 0) {
        try rawField(w, &first, "preserved-tokens", "[");
        for (opts.preserved, 0..) |t, i| {
            if (i > 0) try w.writeByte(',');
            try std.json.encodeJsonString(t, .{}, w);
        }
        try w.writeByte(']');
    }
    try w.writeByte('}');
}

fn rawField(w: anytype, first: *bool, key: []const u8, json: []const u8) !void {
    if (!first.*) try w.writeByte(',');
    first.* = false;
    try std.json.encodeJsonString(key, .{}, w);
    try w.writeByte(':');
    try w.writeAll(json);
}

fn field(w: anytype, first: *bool, key: []const u8, value: anytype) !void {
    if (!first.*) try w.writeByte(',');
    first.* = false;
    try std.json.encodeJsonString(key, .{}, w);
    try w.writeByte(':');
    switch (@TypeOf(value)) {
        f64 => try w.print("{d}", .{value}),
        []const u8 => try std.json.encodeJsonString(value, .{}, w),
        else => try w.print("{d}", .{value}),
    }
}

// ---------------------------------------------------------------------------
// Responses

/// What every response and chunk of one completion shares.
pub const Envelope = struct {
    id: []const u8,
    created: i64,
    model: []const u8,
    system_fingerprint: []const u8,
};

pub const Usage = struct {
    prompt_tokens: u32,
    completion_tokens: u32,
    /// Prompt tokens the host reused from its KV cache (an earlier turn of the conversation).
    cached_tokens: u32 = 0,
};

pub const Delta = union(enum) {
    /// The first chunk: the role, and no text yet.
    role,
    /// The first chunk when the answer may be function calls: content null.
    role_null,
    content: []const u8,
    /// The first delta of a function call: its id and name, arguments "".
    call_start: struct { index: u32, id: []const u8, name: []const u8 },
    /// More of a call's arguments (JSON text, as generated).
    call_arguments: struct { index: u32, fragment: []const u8 },
    /// Thinking, apart from the answer: `{"reasoning_content":...}`.
    reasoning: []const u8,
    /// The last choice chunk, next to its finish_reason.
    empty,
};

/// A function call in a response.
pub const OutCall = struct {
    id: []const u8,
    name: []const u8,
    /// JSON text (OpenAI sends the arguments as a string).
    arguments: []const u8,
};

/// One choice of a whole completion.
pub const Choice = struct {
    content: ?[]const u8,
    tool_calls: []const OutCall = &.{},
    finish: Finish,
    /// The host's logprob entries (a JSON array), when asked for.
    logprobs: ?[]const u8 = null,
    /// The stop string that ended the text, if one did.
    stop_sequence: ?[]const u8 = null,
    /// The thinking apart from the answer (written only when not empty).
    reasoning: []const u8 = "",
};

fn appendEnvelope(w: anytype, env: Envelope, object: []const u8) !void {
    try w.writeAll("{\"id\":");
    try std.json.encodeJsonString(env.id, .{}, w);
    try w.print(",\"object\":\"{s}\",\"created\":{d},\"model\":", .{ object, env.created });
    try std.json.encodeJsonString(env.model, .{}, w);
    try w.writeAll(",\"system_fingerprint\":");
    try std.json.encodeJsonString(env.system_fingerprint, .{}, w);
}

fn appendUsage(w: anytype, usage: Usage) !void {
    try w.print("\"usage\":{{\"prompt_tokens\":{d},\"completion_tokens\":{d},\"total_tokens\":{d}," ++
        "\"prompt_tokens_details\":{{\"cached_tokens\":{d}}}}}", .{
        usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens, usage.cached_tokens,
    });
}

/// One SSE event `data: {chat.completion.chunk}\n\n` with a single choice.
pub fn appendChunk(out: *std.ArrayList(u8), env: Envelope, delta: Delta, finish: ?Finish) !void {
    return appendChoiceChunk(out, env, 0, delta, null, finish);
}

/// A chunk of choice `index`; `logprobs` is a JSON array of the host's
/// entries for the tokens behind this delta.
pub fn appendChoiceChunk(out: *std.ArrayList(u8), env: Envelope, index: u32, delta: Delta, logprobs: ?[]const u8, finish: ?Finish) !void {
    const w = out.writer();
    try w.writeAll("data: ");
    try appendEnvelope(w, env, "chat.completion.chunk");
    try w.print(",\"choices\":[{{\"index\":{d},\"delta\":", .{index});
    switch (delta) {
        .role => try w.writeAll("{\"role\":\"assistant\",\"content\":\"\"}"),
        .role_null => try w.writeAll("{\"role\":\"assistant\",\"content\":null}"),
        .content => |text| {
            try w.writeAll("{\"content\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
        .call_start => |c| {
            try w.print("{{\"tool_calls\":[{{\"index\":{d},\"id\":", .{c.index});
            try std.json.encodeJsonString(c.id, .{}, w);
            try w.writeAll(",\"type\":\"function\",\"function\":{\"name\":");
            try std.json.encodeJsonString(c.name, .{}, w);
            try w.writeAll(",\"arguments\":\"\"}}]}");
        },
        .call_arguments => |c| {
            try w.print("{{\"tool_calls\":[{{\"index\":{d},\"function\":{{\"arguments\":", .{c.index});
            try std.json.encodeJsonString(c.fragment, .{}, w);
            try w.writeAll("}}]}");
        },
        .reasoning => |text| {
            try w.writeAll("{\"reasoning_content\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
        .empty => try w.writeAll("{}"),
    }
    try w.writeAll(",\"logprobs\":");
    try appendLogprobs(out.allocator, w, logprobs);
    try w.writeAll(",\"finish_reason\":");
    if (finish) |f| try w.print("\"{s}\"", .{@tagName(f)}) else try w.writeAll("null");
    try w.writeAll("}]}\n\n");
}

/// `{"content":[{token,logprob,bytes,top_logprobs}],"refusal":null}` from the
/// host's entries (which also carry token ids), or `null`.
fn appendLogprobs(allocator: std.mem.Allocator, w: anytype, entries: ?[]const u8) !void {
    const json = entries orelse return w.writeAll("null");
    var arena = std.heap.ArenaAllocator.init(allocator);
    defer arena.deinit();
    const parsed = std.json.parseFromSliceLeaky(Value, arena.allocator(), json, .{}) catch return w.writeAll("null");
    if (parsed != .array) return w.writeAll("null");
    try w.writeAll("{\"content\":[");
    for (parsed.array.items, 0..) |entry, i| {
        if (i > 0) try w.writeByte(',');
        try appendTokenLogprob(w, entry, true);
    }
    try w.writeAll("],\"refusal\":null}");
}

fn appendTokenLogprob(w: anytype, entry: Value, with_top: bool) !void {
    if (entry != .object) return w.writeAll("{\"token\":\"\",\"logprob\":-9999.0,\"bytes\":null,\"top_logprobs\":[]}");
    const o = entry.object;
    try w.writeAll("{\"token\":");
    const token = o.get("token") orelse Value{ .string = "" };
    try std.json.encodeJsonString(if (token == .string) token.string else "", .{}, w);
    try w.writeAll(",\"logprob\":");
    const lp = o.get("logprob") orelse Value{ .float = 0 };
    switch (lp) {
        .integer => |x| try w.print("{d}", .{x}),
        .float => |x| if (std.math.isFinite(x)) try w.print("{d}", .{x}) else try w.writeAll("-9999.0"),
        else => try w.writeAll("-9999.0"),
    }
    try w.writeAll(",\"bytes\":");
    if (o.get("bytes")) |b| try std.json.stringify(b, .{}, w) else try w.writeAll("null");
    if (with_top) {
        try w.writeAll(",\"top_logprobs\":[");
        if (o.get("top_logprobs")) |top| if (top == .array) for (top.array.items, 0..) |t, i| {
            if (i > 0) try w.writeByte(',');
            try appendTokenLogprob(w, t, false);
        };
        try w.writeByte(']');
    }
    try w.writeByte('}');
}

/// The SSE event with `"choices":[]` and the usage (stream_options.include_usage).
pub fn appendUsageChunk(out: *std.ArrayList(u8), env: Envelope, usage: Usage) !void {
    const w = out.writer();
    try w.writeAll("data: ");
    try appendEnvelope(w, env, "chat.completion.chunk");
    try w.writeAll(",\"choices\":[],");
    try appendUsage(w, usage);
    try w.writeAll("}\n\n");
}

pub const done_event = "data: [DONE]\n\n";

/// A whole `chat.completion` object with one text choice.
pub fn appendCompletion(out: *std.ArrayList(u8), env: Envelope, content: []const u8, finish: Finish, usage: Usage) !void {
    return appendCompletionChoices(out, env, &.{.{ .content = content, .finish = finish }}, usage);
}

/// A whole `chat.completion` object; choice i has index i.
pub fn appendCompletionChoices(out: *std.ArrayList(u8), env: Envelope, choices: []const Choice, usage: Usage) !void {
    const w = out.writer();
    try appendEnvelope(w, env, "chat.completion");
    try w.writeAll(",\"choices\":[");
    for (choices, 0..) |c, i| {
        if (i > 0) try w.writeByte(',');
        try w.print("{{\"index\":{d},\"message\":{{\"role\":\"assistant\",\"content\":", .{i});
        if (c.content) |text| try std.json.encodeJsonString(text, .{}, w) else try w.writeAll("null");
        if (c.reasoning.len > 0) {
            try w.writeAll(",\"reasoning_content\":");
            try std.json.encodeJsonString(c.reasoning, .{}, w);
        }
        if (c.tool_calls.len > 0) {
            try w.writeAll(",\"tool_calls\":[");
            for (c.tool_calls, 0..) |call, j| {
                if (j > 0) try w.writeByte(',');
                try w.writeAll("{\"id\":");
                try std.json.encodeJsonString(call.id, .{}, w);
                try w.writeAll(",\"type\":\"function\",\"function\":{\"name\":");
                try std.json.encodeJsonString(call.name, .{}, w);
                try w.writeAll(",\"arguments\":");
                try std.json.encodeJsonString(call.arguments, .{}, w);
                try w.writeAll("}}");
            }
            try w.writeByte(']');
        }
        try w.writeAll("},\"logprobs\":");
        try appendLogprobs(out.allocator, w, c.logprobs);
        try w.print(",\"finish_reason\":\"{s}\"}}", .{@tagName(c.finish)});
    }
    try w.writeAll("],");
    try appendUsage(w, usage);
    try w.writeByte('}');
}

pub fn appendError(out: *std.ArrayList(u8), err: ApiError) !void {
    const w = out.writer();
    try w.writeAll("{\"error\":{\"message\":");
    try std.json.encodeJsonString(err.message, .{}, w);
    try w.writeAll(",\"type\":");
    try std.json.encodeJsonString(err.kind, .{}, w);
    try w.writeAll(",\"param\":");
    if (err.param) |p| try std.json.encodeJsonString(p, .{}, w) else try w.writeAll("null");
    try w.writeAll(",\"code\":");
    if (err.code) |c| try std.json.encodeJsonString(c, .{}, w) else try w.writeAll("null");
    try w.writeAll("}}");
}

// ---------------------------------------------------------------------------

const testing = std.testing;

fn expectInvalid(body: []const u8, status: u16, param: ?[]const u8, message_part: []const u8) !void {
    try @import("test_support.zig").expectInvalid(parseChatRequest, body, status, param, message_part);
}

test "a full request is parsed" {
    var diag = Diagnostic{};
    var req = try parseChatRequest(testing.allocator,
        \\{"model":"m","messages":[{"role":"developer","content":"S"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
        \\{"role":"assistant","content":null}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":9,"max_completion_tokens":7,
        \\"temperature":0.5,"top_p":1,"seed":-3,"presence_penalty":0.25,"frequency_penalty":-1,"stop":["x","","y"],"n":1,"tools":[],"logit_bias":{},
        \\"response_format":{"type":"json_object"},"user":"ignored","unknown":{"deep":[1]}}
    , &diag);
    defer req.deinit();
    try testing.expectEqualStrings("m", req.model.?);
    try testing.expectEqual(@as(usize, 3), req.messages.len);
    try testing.expectEqual(templates.Role.system, req.messages[0].role);
    try testing.expectEqualStrings("a\nb", req.messages[1].content);
    try testing.expectEqualStrings("", req.messages[2].content);
    try testing.expect(req.stream and req.include_usage);
    try testing.expectEqual(@as(?u32, 7), req.max_tokens);
    try testing.expectEqual(@as(?f64, 1), req.top_p);
    try testing.expectEqual(@as(?i64, -3), req.seed);
    try testing.expectEqual(@as(usize, 2), req.stop.len);
    try testing.expectEqual(ResponseFormat.json_object, req.response_format);
}

test "requests the API refuses" {
    try expectInvalid("{not json", 400, null, "could not parse the JSON body");
    try expectInvalid("[1]", 400, null, "must be a JSON object");
    try expectInvalid("{}", 400, "messages", "Missing required parameter: 'messages'");
    try expectInvalid("{\"messages\":[]}", 400, "messages", "at least one message");
    try expectInvalid("{\"messages\":\"hi\"}", 400, "messages", "expected an array, but got a string");
    try expectInvalid("{\"messages\":[{\"role\":\"king\",\"content\":\"x\"}]}", 400, "messages[0].role", "'king'");
    try expectInvalid("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].tool_call_id", "Missing");
    try expectInvalid("{\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}", 400, "messages[0].role", "deprecated");
    try expectInvalid("{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role", "Missing");
    try expectInvalid("{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content", "Missing");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content", "got a number");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}", 400, "messages[0].content[0]", "'image_url' are not supported");
    const ok_messages = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    try expectInvalid("{" ++ ok_messages ++ ",\"temperature\":\"hot\"}", 400, "temperature", "expected a number");
    try expectInvalid("{" ++ ok_messages ++ ",\"temperature\":3}", 400, "temperature", "between 0 and 2");
    try expectInvalid("{" ++ ok_messages ++ ",\"max_tokens\":0}", 400, "max_tokens", "at least 1");
    try expectInvalid("{" ++ ok_messages ++ ",\"max_tokens\":1.5}", 400, "max_tokens", "expected an integer");
    try expectInvalid("{" ++ ok_messages ++ ",\"stream\":\"yes\"}", 400, "stream", "expected a boolean");
    try expectInvalid("{" ++ ok_messages ++ ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop", "at most 4");
    try expectInvalid("{" ++ ok_messages ++ ",\"stop\":[1]}", 400, "stop", "expected a string or an array of strings");
    try expectInvalid("{" ++ ok_messages ++ ",\"n\":9}", 400, "n", "between 1 and 8");
    try expectInvalid("{" ++ ok_messages ++ ",\"n\":0}", 400, "n", "between 1 and 8");
    try expectInvalid("{" ++ ok_messages ++ ",\"top_logprobs\":21,\"logprobs\":true}", 400, "top_logprobs", "between 0 and 20");
    try expectInvalid("{" ++ ok_messages ++ ",\"top_logprobs\":2}", 400, "top_logprobs", "needs 'logprobs'");
    try expectInvalid("{" ++ ok_messages ++ ",\"logit_bias\":{\"x\":5}}", 400, "logit_bias", "not a token id");
    try expectInvalid("{" ++ ok_messages ++ ",\"logit_bias\":{\"7\":101}}", 400, "logit_bias", "between -100 and 100");
    try expectInvalid("{" ++ ok_messages ++ ",\"functions\":[{\"name\":\"f\"}]}", 400, "functions", "deprecated");
}

test "malformed tools, tool choices and tool history name the field" {
    const ok_messages = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    const f = "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"}}}";
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":{}}", 400, "tools", "expected an array");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools[0].function", "Missing");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[{\"type\":\"retrieval\",\"function\":{}}]}", 400, "tools[0].type", "'retrieval'");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[" ++ f ++ ",{\"type\":\"function\",\"function\":{\"name\":\"bad name\"}}]}", 400, "tools[1].function.name", "1 to 64 characters");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"" ++ "a" ** 65 ++ "\"}}]}", 400, "tools[0].function.name", "1 to 64");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[" ++ f ++ "," ++ f ++ "]}", 400, "tools[1].function.name", "declared twice");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]}", 400, "tools[0].function.parameters", "JSON Schema");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[" ++ f ++ "],\"tool_choice\":\"sometimes\"}", 400, "tool_choice", "'sometimes'");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[" ++ f ++ "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}}", 400, "tool_choice", "no function named 'nope'");
    try expectInvalid("{" ++ ok_messages ++ ",\"tool_choice\":\"required\"}", 400, "tool_choice", "declares no functions");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[" ++ f ++ "],\"response_format\":{\"type\":\"json_object\"}}", 400, "response_format", "cannot be combined");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]}", 400, "messages[1].tool_calls[0].function.arguments", "expected a string");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}", 400, "messages[1].tool_calls[0].id", "Missing");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c2\",\"content\":\"r\"}]}", 400, "messages[2].tool_call_id", "'c2'");
}

test "a tool conversation is parsed" {
    var diag = Diagnostic{};
    var req = try parseChatRequest(testing.allocator,
        \\{"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
        \\{"role":"tool","tool_call_id":"call_1","content":"sunny"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object","properties":{"city":{"type":"string"}}},"strict":true}}],
        \\"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false,"n":3,"logprobs":true,"top_logprobs":2,"logit_bias":{"15":-100,"7":2.5}}
    , &diag);
    defer req.deinit();
    try testing.expectEqual(@as(usize, 1), req.tools.len);
    try testing.expectEqualStrings("get_weather", req.tools[0].name);
    try testing.expect(req.tools[0].strict);
    try testing.expectEqualStrings("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}", req.tools[0].parameters);
    try testing.expectEqualStrings("get_weather", req.tool_choice.function);
    try testing.expect(!req.parallel_tool_calls);
    try testing.expectEqual(templates.Role.tool, req.messages[2].role);
    try testing.expectEqualStrings("call_1", req.messages[2].tool_call_id.?);
    try testing.expectEqualStrings("{\"city\":\"Paris\"}", req.messages[1].tool_calls[0].arguments);
    try testing.expectEqual(@as(u8, 3), req.n);
    try testing.expectEqual(@as(u8, 2), req.top_logprobs);
    try testing.expectEqualStrings("{\"15\":-100,\"7\":2.5}", req.logit_bias.?);
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendMetadata(&out, &req, .{ .choice = 2, .constraint = .{ .schema = "{}", .prefix = "<a>", .triggers = &.{"<a>"} } });
    try testing.expectEqualStrings(
        \\{"logprobs":true,"top-logprobs":2,"logit-bias":{"15":-100,"7":2.5},"json-schema":"{}","grammar-prefix":"<a>","grammar-triggers":["<a>"]}
    , out.items);
    const ok_messages = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    try expectInvalid("{" ++ ok_messages ++ ",\"response_format\":{\"type\":\"yaml\"}}", 400, "response_format.type", "'yaml'");
    try expectInvalid("{" ++ ok_messages ++ ",\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format.json_schema", "expected an object");
}

test "metadata carries the sampling options, the limit and the grammar" {
    var diag = Diagnostic{};
    var req = try parseChatRequest(testing.allocator,
        \\{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"top_p":0.9,"seed":42,"presence_penalty":1,"frequency_penalty":0.5,
        \\"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}
    , &diag);
    defer req.deinit();
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendMetadata(&out, &req, .{ .n_predict = 128 });
    try testing.expectEqualStrings(
        \\{"n-predict":128,"temp":0.7,"top-p":0.9,"seed":42,"presence-penalty":1,"frequency-penalty":0.5,"json-schema":"{\"type\":\"object\"}"}
    , out.items);

    req.response_format = .json_object;
    out.clearRetainingCapacity();
    try appendMetadata(&out, &req, .{});
    const parsed = try std.json.parseFromSlice(Value, testing.allocator, out.items, .{});
    defer parsed.deinit();
    try testing.expectEqualStrings(json_object_grammar, parsed.value.object.get("grammar").?.string);
    try testing.expect(parsed.value.object.get("n-predict") == null);
}

test "chunks and completions are valid JSON in the OpenAI shapes" {
    const env = Envelope{ .id = "chatcmpl-1", .created = 5, .model = "m", .system_fingerprint = "fp" };
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendChunk(&out, env, .{ .content = "a\"b\n" }, null);
    try testing.expectEqualStrings(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"system_fingerprint\":\"fp\"," ++
            "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\\"b\\n\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        out.items,
    );
    out.clearRetainingCapacity();
    try appendCompletion(&out, env, "hi", .length, .{ .prompt_tokens = 3, .completion_tokens = 2 });
    const parsed = try std.json.parseFromSlice(Value, testing.allocator, out.items, .{});
    defer parsed.deinit();
    const usage = parsed.value.object.get("usage").?.object;
    try testing.expectEqual(@as(i64, 5), usage.get("total_tokens").?.integer);
    const choice = parsed.value.object.get("choices").?.array.items[0].object;
    try testing.expectEqualStrings("length", choice.get("finish_reason").?.string);
}

test "errors have message, type, param and code" {
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendError(&out, .{ .status = 404, .message = "no \"x\"", .param = "model", .code = "model_not_found" });
    try testing.expectEqualStrings(
        \\{"error":{"message":"no \"x\"","type":"invalid_request_error","param":"model","code":"model_not_found"}}
    , out.items);
}
