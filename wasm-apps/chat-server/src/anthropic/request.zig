//! Anthropic's Messages API (`POST /v1/messages`, and `/v1/messages/count_tokens`),
//! the request: translated onto the chat path's `ChatRequest` (the same
//! templates, the same call reading). Errors name the field as Anthropic's
//! do (`messages.1.content.0.type: ...`).

const std = @import("std");
const shared = @import("shared");
const chat_request = @import("../chat/request.zig");
const request_tools = @import("../chat/request_tools.zig");
const fields = @import("../fields.zig");
const images = @import("../images.zig");

const templates = shared.templates;
const Diagnostic = shared.api_error.Diagnostic;
const ChatRequest = chat_request.ChatRequest;
const Message = templates.Message;
const Value = std.json.Value;

/// What the response shows of the model's thinking.
pub const Thinking = enum {
    /// Thinking was not asked for: no thinking block (what the model thought anyway is left out).
    hidden,
    /// A thinking block with the text.
    shown,
    /// `display: "omitted"`: a thinking block with empty text, the signature kept.
    omitted,
};

/// Anthropic's least `thinking.budget_tokens`.
pub const min_thinking_budget = 1024;

/// A checked Messages request: the chat request it becomes, and what its
/// response shows of the thinking.
pub const Request = struct {
    chat: ChatRequest,
    thinking: Thinking = .hidden,

    pub fn deinit(self: *Request) void {
        self.chat.deinit();
    }
};

/// Which route the body is for: count_tokens takes no `max_tokens`.
pub const Route = enum { messages, count_tokens };

/// parseRequestWith the default image limits.
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, route: Route, diag: *Diagnostic) !Request {
    return parseRequestWith(allocator, body, route, chat_request.default_image_limits, diag);
}

/// Parses and checks a Messages request. On error.InvalidRequest `diag.err`
/// says what is wrong; its message names the field as Anthropic's do
/// (`messages.1.content.0.type: ...`).
pub fn parseRequestWith(allocator: std.mem.Allocator, body: []const u8, route: Route, image_limits: images.Limits, diag: *Diagnostic) !Request {
    var parsed = Request{ .chat = .{ .arena = std.heap.ArenaAllocator.init(allocator) } };
    errdefer parsed.deinit();
    const req = &parsed.chat;
    const arena = req.arena.allocator();

    const root = std.json.parseFromSliceLeaky(Value, arena, body, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return diag.set(400, null, null, "The request body is not valid JSON.", .{}),
    };
    if (root != .object) return diag.set(400, null, null, "The request body must be a JSON object.", .{});
    const obj = root.object;

    req.model = (try string(obj, "model", "model", diag)) orelse return diag.set(400, "model", null, "model: Field required", .{});
    if (try fields.optInteger(obj, "max_tokens", diag)) |max_tokens| {
        if (max_tokens < 1) return diag.set(400, "max_tokens", null, "max_tokens: must be at least 1, not {d}", .{max_tokens});
        req.max_tokens = @intCast(@min(max_tokens, std.math.maxInt(u32)));
    } else if (route == .messages) return diag.set(400, "max_tokens", null, "max_tokens: Field required", .{});
    req.stream = (try fields.optBool(obj, "stream", diag)) orelse false;
    req.temperature = try fields.optNumberIn(obj, "temperature", 0, 1, diag);
    req.top_p = try fields.optNumberIn(obj, "top_p", 0, 1, diag);
    if (try fields.optInteger(obj, "top_k", diag)) |k| {
        if (k < 0) return diag.set(400, "top_k", null, "top_k: must be at least 0, not {d}", .{k});
        req.top_k = @intCast(@min(k, std.math.maxInt(u32)));
    }
    req.stop = try stopSequences(arena, obj.get("stop_sequences"), diag);

    var messages = std.ArrayList(Message).init(arena);
    var thoughts = std.ArrayList(?[]const u8).init(arena);
    if (obj.get("system")) |system| if (system != .null) {
        try messages.append(.{ .role = .system, .content = try textOf(arena, system, "system", diag) });
    };
    var image_parts = chat_request.ImageParts{ .limits = image_limits };
    try parseMessages(arena, obj.get("messages"), &messages, &thoughts, &image_parts, diag);
    req.messages = messages.items;
    req.n_images = image_parts.count;
    try thoughts.appendNTimes(null, messages.items.len - thoughts.items.len);
    req.reasoning = thoughts.items;
    req.tools = try parseTools(arena, obj.get("tools"), diag);
    try parseToolChoice(obj.get("tool_choice"), req, diag);
    parsed.thinking = try parseThinking(obj.get("thinking"), req.max_tokens, diag);
    if (parsed.thinking != .hidden and (req.tool_choice == .required or req.tool_choice == .function))
        return diag.set(400, "thinking", null, "Thinking may not be enabled when tool_choice forces tool use.", .{});
    // The template's thinking switch (Qwen3's `enable_thinking`), as on the
    // chat path's `chat_template_kwargs`; templates without it ignore it.
    req.template_kwargs = if (parsed.thinking == .hidden) "{\"enable_thinking\":false}" else "{\"enable_thinking\":true}";
    return parsed;
}

/// `thinking`: `enabled` (with `budget_tokens`, at least 1024 and below
/// max_tokens) and `adaptive` turn thinking on; `disabled` and
/// `between_tools` (thinking off) and no `thinking` leave it off.
fn parseThinking(value: ?Value, max_tokens: ?u32, diag: *Diagnostic) !Thinking {
    const v = value orelse return .hidden;
    if (v == .null) return .hidden;
    if (v != .object) return diag.set(400, "thinking", null, "thinking: Input should be a valid dictionary or object to extract fields from", .{});
    const kind = blockType(v) orelse return diag.set(400, "thinking", null, "thinking: Unable to extract tag using discriminator 'type'", .{});
    const o = v.object;
    if (std.mem.eql(u8, kind, "disabled") or std.mem.eql(u8, kind, "between_tools")) return .hidden;
    const enabled = std.mem.eql(u8, kind, "enabled");
    if (!enabled and !std.mem.eql(u8, kind, "adaptive"))
        return diag.set(400, "thinking", null, "thinking: Input tag '{s}' found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive', 'between_tools'", .{kind});
    if (enabled) {
        const budget = o.get("budget_tokens") orelse Value.null;
        const n: i64 = switch (budget) {
            .integer => |i| i,
            .null => return diag.set(400, "thinking", null, "thinking.enabled.budget_tokens: Field required", .{}),
            else => return diag.set(400, "thinking", null, "thinking.enabled.budget_tokens: Input should be a valid integer", .{}),
        };
        if (n < min_thinking_budget)
            return diag.set(400, "thinking", null, "thinking.enabled.budget_tokens: Input should be greater than or equal to {d}", .{min_thinking_budget});
        if (max_tokens) |max| if (n >= max)
            return diag.set(400, "max_tokens", null, "`max_tokens` must be greater than `thinking.budget_tokens`.", .{});
    }
    const display = o.get("display") orelse Value.null;
    return switch (display) {
        .null => .shown,
        .string => |d| if (std.mem.eql(u8, d, "summarized")) .shown else if (std.mem.eql(u8, d, "omitted")) .omitted else
            diag.set(400, "thinking", null, "thinking.{s}.display: Input should be 'summarized' or 'omitted'", .{kind}),
        else => diag.set(400, "thinking", null, "thinking.{s}.display: Input should be 'summarized' or 'omitted'", .{kind}),
    };
}

fn string(obj: std.json.ObjectMap, key: []const u8, field: []const u8, diag: *Diagnostic) !?[]const u8 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .string => |s| s,
        else => diag.set(400, field, null, "{s}: Input should be a valid string", .{field}),
    };
}

fn stopSequences(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const []const u8 {
    const v = value orelse return &.{};
    const list = switch (v) {
        .null => return &.{},
        .array => |a| a.items,
        else => return diag.set(400, "stop_sequences", null, "stop_sequences: Input should be a valid list", .{}),
    };
    var stops = std.ArrayList([]const u8).init(arena);
    for (list) |item| {
        if (item != .string) return diag.set(400, "stop_sequences", null, "stop_sequences: each item should be a string", .{});
        if (item.string.len > 0) try stops.append(item.string);
    }
    return stops.items;
}

/// A string, or text blocks `[{type:"text", text}]` joined with newlines.
fn textOf(arena: std.mem.Allocator, value: Value, field: []const u8, diag: *Diagnostic) ![]const u8 {
    switch (value) {
        .string => |s| return s,
        .array => |blocks| {
            var text = std.ArrayList(u8).init(arena);
            for (blocks.items, 0..) |block, i| {
                const kind = blockType(block) orelse return diag.set(400, field, null, "{s}.{d}: a content block needs a string 'type'", .{ field, i });
                if (!std.mem.eql(u8, kind, "text"))
                    return diag.set(400, field, null, "{s}.{d}.type: '{s}' blocks are not supported here: this model takes text only", .{ field, i, kind });
                const t = block.object.get("text") orelse Value.null;
                if (t != .string) return diag.set(400, field, null, "{s}.{d}.text: Field required", .{ field, i });
                if (text.items.len > 0) try text.append('\n');
                try text.appendSlice(t.string);
            }
            return text.items;
        },
        else => return diag.set(400, field, null, "{s}: Input should be a string or a list of content blocks", .{field}),
    }
}

fn blockType(block: Value) ?[]const u8 {
    if (block != .object) return null;
    const t = block.object.get("type") orelse return null;
    return if (t == .string) t.string else null;
}

/// `messages`: user and assistant turns of text, `tool_use` (assistant) and
/// `tool_result` (user) blocks. A tool result becomes a `tool` message, as
/// llama.cpp maps it, so templates see the calls and results as in OpenAI's API.
/// An assistant turn's `thinking` blocks become its reasoning (`thoughts`, by
/// message index), as `reasoning_content` is on the chat path.
fn parseMessages(arena: std.mem.Allocator, value: ?Value, out: *std.ArrayList(Message), thoughts: *std.ArrayList(?[]const u8), image_parts: *chat_request.ImageParts, diag: *Diagnostic) !void {
    const v = value orelse return diag.set(400, "messages", null, "messages: Field required", .{});
    if (v != .array) return diag.set(400, "messages", null, "messages: Input should be a valid list", .{});
    if (v.array.items.len == 0) return diag.set(400, "messages", null, "messages: at least one message is required", .{});
    var field_buf: [64]u8 = undefined;
    for (v.array.items, 0..) |item, i| {
        const field = std.fmt.bufPrint(&field_buf, "messages.{d}", .{i}) catch "messages";
        if (item != .object) return diag.set(400, field, null, "{s}: Input should be an object", .{field});
        const role_value = item.object.get("role") orelse Value.null;
        if (role_value != .string) return diag.set(400, field, null, "{s}.role: Field required", .{field});
        const role: templates.Role = if (std.mem.eql(u8, role_value.string, "user")) .user else if (std.mem.eql(u8, role_value.string, "assistant")) .assistant else
            return diag.set(400, field, null, "{s}.role: Input should be 'user' or 'assistant', not '{s}'", .{ field, role_value.string });
        const content = item.object.get("content") orelse return diag.set(400, field, null, "{s}.content: Field required", .{field});
        switch (content) {
            .string => |s| try out.append(.{ .role = role, .content = s }),
            .array => |blocks| try appendBlocks(arena, out, thoughts, role, blocks.items, field, image_parts, diag),
            else => return diag.set(400, field, null, "{s}.content: Input should be a string or a list of content blocks", .{field}),
        }
    }
}

fn appendBlocks(arena: std.mem.Allocator, out: *std.ArrayList(Message), thoughts: *std.ArrayList(?[]const u8), role: templates.Role, blocks: []const Value, field: []const u8, image_parts: *chat_request.ImageParts, diag: *Diagnostic) !void {
    var text = std.ArrayList(u8).init(arena);
    var calls = std.ArrayList(templates.ToolCall).init(arena);
    var thought = std.ArrayList(u8).init(arena);
    var thinks = false;
    for (blocks, 0..) |block, j| {
        const kind = blockType(block) orelse return diag.set(400, field, null, "{s}.content.{d}: a content block needs a string 'type'", .{ field, j });
        const o = block.object;
        if (std.mem.eql(u8, kind, "text")) {
            const t = o.get("text") orelse Value.null;
            if (t != .string) return diag.set(400, field, null, "{s}.content.{d}.text: Field required", .{ field, j });
            if (text.items.len > 0) try text.append('\n');
            try text.appendSlice(t.string);
        } else if (std.mem.eql(u8, kind, "image")) {
            if (role != .user) return diag.set(400, field, null, "{s}.content.{d}: image blocks belong in user messages", .{ field, j });
            if (text.items.len > 0) try text.append('\n');
            try text.appendSlice(try imageBlock(arena, o, field, j, image_parts, diag));
        } else if (std.mem.eql(u8, kind, "tool_use")) {
            if (role != .assistant) return diag.set(400, field, null, "{s}.content.{d}: tool_use blocks belong in assistant messages", .{ field, j });
            const id = o.get("id") orelse Value.null;
            const name = o.get("name") orelse Value.null;
            if (id != .string) return diag.set(400, field, null, "{s}.content.{d}.id: Field required", .{ field, j });
            if (name != .string) return diag.set(400, field, null, "{s}.content.{d}.name: Field required", .{ field, j });
            const input = o.get("input") orelse Value{ .object = std.json.ObjectMap.init(arena) };
            if (input != .object) return diag.set(400, field, null, "{s}.content.{d}.input: Input should be an object", .{ field, j });
            try calls.append(.{ .id = id.string, .name = name.string, .arguments = try std.json.stringifyAlloc(arena, input, .{}) });
        } else if (std.mem.eql(u8, kind, "tool_result")) {
            if (role != .user) return diag.set(400, field, null, "{s}.content.{d}: tool_result blocks belong in user messages", .{ field, j });
            const id = o.get("tool_use_id") orelse Value.null;
            if (id != .string) return diag.set(400, field, null, "{s}.content.{d}.tool_use_id: Field required", .{ field, j });
            var sub_buf: [96]u8 = undefined;
            const sub = std.fmt.bufPrint(&sub_buf, "{s}.content.{d}.content", .{ field, j }) catch field;
            var result: []const u8 = if (o.get("content")) |c| if (c == .null) "" else try textOf(arena, c, sub, diag) else "";
            if (o.get("is_error")) |e| if (e == .bool and e.bool) {
                result = try std.fmt.allocPrint(arena, "Error: {s}", .{result});
            };
            if (!hasCall(out.items, id.string))
                return diag.set(400, field, null, "{s}.content.{d}.tool_use_id: '{s}' answers no tool_use block of an earlier assistant message", .{ field, j, id.string });
            try out.append(.{ .role = .tool, .content = result, .tool_call_id = id.string });
        } else if (std.mem.eql(u8, kind, "thinking") or std.mem.eql(u8, kind, "redacted_thinking")) {
            if (role != .assistant) return diag.set(400, field, null, "{s}.content.{d}: {s} blocks belong in assistant messages", .{ field, j, kind });
            const redacted = kind[0] == 'r';
            // The signature is not checked: see Output.
            for ([_][]const u8{ if (redacted) "data" else "thinking", if (redacted) "data" else "signature" }) |key| {
                const v = o.get(key) orelse Value.null;
                if (v != .string) return diag.set(400, field, null, "{s}.content.{d}.{s}: Field required", .{ field, j, key });
            }
            thinks = true;
            // Redacted thinking is opaque: nothing of it can reach the template.
            if (!redacted) {
                if (thought.items.len > 0) try thought.append('\n');
                try thought.appendSlice(o.get("thinking").?.string);
            }
        } else {
            return diag.set(400, field, null, "{s}.content.{d}.type: '{s}' blocks are not supported: this server takes text, thinking, tool_use and tool_result", .{ field, j, kind });
        }
    }
    if (calls.items.len > 0 or text.items.len > 0 or thinks or blocks.len == 0) {
        try out.append(.{ .role = role, .content = text.items, .tool_calls = calls.items });
        if (thought.items.len > 0) {
            try thoughts.appendNTimes(null, out.items.len - 1 - thoughts.items.len);
            try thoughts.append(thought.items);
        }
    }
}

/// An `image` block's source (`{type:"base64", media_type, data}`; a `url`
/// source is refused as the chat path refuses http URLs) as its tag.
fn imageBlock(arena: std.mem.Allocator, o: std.json.ObjectMap, field: []const u8, j: usize, seen: *chat_request.ImageParts, diag: *Diagnostic) ![]const u8 {
    const source = o.get("source") orelse Value.null;
    const source_type = blockType(source) orelse return diag.set(400, field, null, "{s}.content.{d}.source: Field required", .{ field, j });
    const form: chat_request.ImageParts.Form = if (std.mem.eql(u8, source_type, "base64")) .base64 else if (std.mem.eql(u8, source_type, "url")) .url else
        return diag.set(400, field, null, "{s}.content.{d}.source.type: Input should be 'base64' or 'url'", .{ field, j });
    const key = if (form == .base64) "data" else "url";
    const data = source.object.get(key) orelse Value.null;
    if (data != .string) return diag.set(400, field, null, "{s}.content.{d}.source.{s}: Field required", .{ field, j, key });
    var prefix_buf: [96]u8 = undefined;
    const prefix = std.fmt.bufPrint(&prefix_buf, "{s}.content.{d}.source: ", .{ field, j }) catch "";
    return seen.tag(arena, data.string, form, field, prefix, diag);
}

fn hasCall(messages: []const Message, id: []const u8) bool {
    for (messages) |m| for (m.tool_calls) |c| if (std.mem.eql(u8, c.id, id)) return true;
    return false;
}

/// `tools`: `[{name, description, input_schema}]`, kept as OpenAI function
/// tools (what templates print).
fn parseTools(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const templates.Tool {
    const v = value orelse return &.{};
    const list = switch (v) {
        .null => return &.{},
        .array => |a| a.items,
        else => return diag.set(400, "tools", null, "tools: Input should be a valid list", .{}),
    };
    const tools = try arena.alloc(templates.Tool, list.len);
    for (list, 0..) |item, i| {
        if (item != .object) return diag.set(400, "tools", null, "tools.{d}: Input should be an object", .{i});
        const o = item.object;
        const name = o.get("name") orelse Value.null;
        if (name != .string) return diag.set(400, "tools", null, "tools.{d}.name: Field required", .{i});
        if (!request_tools.isToolName(name.string))
            return diag.set(400, "tools", null, "tools.{d}.name: '{s}' must have 1 to 64 characters among a-z, A-Z, 0-9, underscores and dashes", .{ i, name.string });
        for (tools[0..i]) |t| if (std.mem.eql(u8, t.name, name.string))
            return diag.set(400, "tools", null, "tools.{d}.name: the tool '{s}' is declared twice", .{ i, name.string });
        const schema = o.get("input_schema") orelse return diag.set(400, "tools", null, "tools.{d}.input_schema: Field required", .{i});
        if (schema != .object) return diag.set(400, "tools", null, "tools.{d}.input_schema: Input should be an object (a JSON Schema)", .{i});
        const description = o.get("description") orelse Value.null;
        if (description != .null and description != .string) return diag.set(400, "tools", null, "tools.{d}.description: Input should be a valid string", .{i});

        var function = std.json.ObjectMap.init(arena);
        try function.put("name", name);
        if (description == .string) try function.put("description", description);
        try function.put("parameters", schema);
        var tool = std.json.ObjectMap.init(arena);
        try tool.put("type", .{ .string = "function" });
        try tool.put("function", .{ .object = function });
        tools[i] = .{
            .name = name.string,
            .description = if (description == .string) description.string else null,
            .parameters = try std.json.stringifyAlloc(arena, schema, .{}),
            .value = .{ .object = tool },
        };
    }
    return tools;
}

/// `tool_choice`: auto, any (a call is required), tool (this one), none.
fn parseToolChoice(value: ?Value, req: *ChatRequest, diag: *Diagnostic) !void {
    req.tool_choice = if (req.tools.len > 0) .auto else .none;
    const v = value orelse return;
    if (v == .null) return;
    const kind = blockType(v) orelse return diag.set(400, "tool_choice", null, "tool_choice.type: Field required", .{});
    const o = v.object;
    if (std.mem.eql(u8, kind, "auto")) {
        req.tool_choice = .auto;
    } else if (std.mem.eql(u8, kind, "any")) {
        req.tool_choice = .required;
    } else if (std.mem.eql(u8, kind, "none")) {
        req.tool_choice = .none;
    } else if (std.mem.eql(u8, kind, "tool")) {
        const name = o.get("name") orelse Value.null;
        if (name != .string) return diag.set(400, "tool_choice", null, "tool_choice.name: Field required", .{});
        for (req.tools) |t| {
            if (std.mem.eql(u8, t.name, name.string)) break;
        } else return diag.set(400, "tool_choice", null, "tool_choice.name: no tool named '{s}' is declared in 'tools'", .{name.string});
        req.tool_choice = .{ .function = name.string };
    } else return diag.set(400, "tool_choice", null, "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not '{s}'", .{kind});
    if (req.tool_choice != .none and req.tool_choice != .auto and req.tools.len == 0)
        return diag.set(400, "tool_choice", null, "tool_choice: asks for a tool call, but 'tools' declares no tools", .{});
    if (o.get("disable_parallel_tool_use")) |d| if (d == .bool and d.bool) {
        req.parallel_tool_calls = false;
    };
}

const testing = std.testing;

fn expectInvalid(body: []const u8, field_part: []const u8) !void {
    var diag = Diagnostic{};
    try testing.expectError(error.InvalidRequest, parseRequest(testing.allocator, body, .messages, &diag));
    try testing.expectEqual(@as(u16, 400), diag.err.status);
    try shared.test_support.expectContains(diag.err.message, field_part);
}

test "a Messages request becomes a chat request" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator,
        \\{"model":"m","max_tokens":50,"system":[{"type":"text","text":"Be brief."}],"stop_sequences":["END"],"top_k":5,"temperature":0.5,
        \\"messages":[{"role":"user","content":"weather?"},
        \\{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
        \\{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"sunny"}]},{"type":"text","text":"thanks"}]}],
        \\"tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object"}}],"tool_choice":{"type":"any","disable_parallel_tool_use":true}}
    , .messages, &diag);
    defer parsed.deinit();
    const req = &parsed.chat;
    try testing.expectEqual(@as(?u32, 50), req.max_tokens);
    try testing.expectEqual(@as(?u32, 5), req.top_k);
    try testing.expectEqual(@as(usize, 5), req.messages.len);
    try testing.expectEqual(templates.Role.system, req.messages[0].role);
    try testing.expectEqualStrings("Checking.", req.messages[2].content);
    try testing.expectEqualStrings("{\"city\":\"Paris\"}", req.messages[2].tool_calls[0].arguments);
    try testing.expectEqual(templates.Role.tool, req.messages[3].role);
    try testing.expectEqualStrings("sunny", req.messages[3].content);
    try testing.expectEqualStrings("toolu_1", req.messages[3].tool_call_id.?);
    try testing.expectEqualStrings("thanks", req.messages[4].content);
    try testing.expectEqual(request_tools.ToolChoice.required, req.tool_choice);
    try testing.expect(!req.parallel_tool_calls);
    try testing.expectEqualStrings("END", req.stop[0]);
    // templates see an OpenAI function tool
    const printed = try std.json.stringifyAlloc(testing.allocator, req.tools[0].value, .{});
    defer testing.allocator.free(printed);
    try testing.expectEqualStrings("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}}", printed);
}

test "Messages requests Anthropic refuses" {
    const ok = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    try expectInvalid("{\"model\":\"m\"," ++ ok ++ "}", "max_tokens: Field required");
    try expectInvalid("{\"max_tokens\":5," ++ ok ++ "}", "model: Field required");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5}", "messages: Field required");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages.0.role");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]}", "messages.0.content.0.source");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x/y.png\"}}]}]}", "not fetched");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\"}]}]}", "messages.0.content.0.type");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"x\"}]}]}", "answers no tool_use");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5," ++ ok ++ ",\"tools\":[{\"name\":\"f\"}]}", "tools.0.input_schema");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5," ++ ok ++ ",\"tools\":[{\"name\":\"f\",\"input_schema\":{}}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"g\"}}", "no tool named 'g'");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5," ++ ok ++ ",\"temperature\":1.5}", "temperature");
}

test "thinking: enabled and adaptive switch the template's thinking on, anything else off" {
    const cases = [_]struct { thinking: []const u8, shows: Thinking, kwargs: []const u8 }{
        .{ .thinking = "", .shows = .hidden, .kwargs = "{\"enable_thinking\":false}" },
        .{ .thinking = ",\"thinking\":{\"type\":\"disabled\"}", .shows = .hidden, .kwargs = "{\"enable_thinking\":false}" },
        .{ .thinking = ",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1024}", .shows = .shown, .kwargs = "{\"enable_thinking\":true}" },
        .{ .thinking = ",\"thinking\":{\"type\":\"adaptive\",\"display\":\"omitted\"}", .shows = .omitted, .kwargs = "{\"enable_thinking\":true}" },
    };
    for (cases) |case| {
        var buf: [256]u8 = undefined;
        const body = try std.fmt.bufPrint(&buf, "{{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]{s}}}", .{case.thinking});
        var diag = Diagnostic{};
        var parsed = try parseRequest(testing.allocator, body, .messages, &diag);
        defer parsed.deinit();
        try testing.expectEqual(case.shows, parsed.thinking);
        try testing.expectEqualStrings(case.kwargs, parsed.chat.template_kwargs.?);
    }
}

test "thinking requests Anthropic refuses" {
    const head = "{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],";
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"enabled\"}}", "thinking.enabled.budget_tokens: Field required");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":1023}}", "greater than or equal to 1024");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2000}}", "`max_tokens` must be greater than `thinking.budget_tokens`");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":\"x\"}}", "valid integer");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"deep\"}}", "Input tag 'deep'");
    try expectInvalid(head ++ "\"thinking\":{}}", "discriminator 'type'");
    try expectInvalid(head ++ "\"thinking\":true}", "thinking: Input should be a valid dictionary");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"adaptive\",\"display\":\"full\"}}", "thinking.adaptive.display");
    try expectInvalid(head ++ "\"thinking\":{\"type\":\"adaptive\"},\"tools\":[{\"name\":\"f\",\"input_schema\":{}}],\"tool_choice\":{\"type\":\"any\"}}", "tool_choice forces tool use");
}

test "count_tokens takes no max_tokens; budget_tokens is still checked" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", .count_tokens, &diag);
    defer parsed.deinit();
    try testing.expectEqual(@as(?u32, null), parsed.chat.max_tokens);
    try testing.expectError(error.InvalidRequest, parseRequest(testing.allocator, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":5}}", .count_tokens, &diag));
    try testing.expect(std.mem.indexOf(u8, diag.err.message, "1024") != null);
}

test "an assistant turn's thinking blocks become its reasoning; redacted thinking is accepted" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator,
        \\{"model":"m","max_tokens":50,"system":"S","messages":[{"role":"user","content":"2+2?"},
        \\{"role":"assistant","content":[{"type":"thinking","thinking":"add them","signature":"x"},{"type":"redacted_thinking","data":"opaque"},{"type":"text","text":"4"}]},
        \\{"role":"user","content":"and 3+3?"},{"role":"assistant","content":[{"type":"redacted_thinking","data":"opaque"}]},{"role":"user","content":"?"}]}
    , .messages, &diag);
    defer parsed.deinit();
    const req = &parsed.chat;
    try testing.expectEqual(@as(usize, 6), req.messages.len);
    try testing.expectEqual(req.messages.len, req.reasoning.len);
    try testing.expectEqualStrings("4", req.messages[2].content);
    try testing.expectEqualStrings("add them", req.reasoning[2].?);
    // a turn of redacted thinking only is kept, empty, so the turns still alternate
    try testing.expectEqual(templates.Role.assistant, req.messages[4].role);
    for ([_]usize{ 0, 1, 3, 4, 5 }) |i| try testing.expect(req.reasoning[i] == null);

    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\",\"signature\":\"s\"}]}]}", "belong in assistant messages");
    try expectInvalid("{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\"}]}]}", "messages.1.content.0.signature: Field required");
}
