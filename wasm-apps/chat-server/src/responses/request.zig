//! OpenAI's Responses API (`POST /v1/responses`), the request: translated
//! onto the chat path's `ChatRequest` (the same templates, the same call
//! reading, the same grammars), as anthropic/request.zig does for Messages.
//! What the response echoes of the request (tools, tool_choice, text,
//! reasoning, metadata) is kept as JSON text. Errors name the path of the
//! field as OpenAI's do (`input[2].call_id`); items.zig reads the items.
//!
//! Tools a local server cannot run (OpenAI's hosted tools: web_search,
//! file_search, code_interpreter, ...) are left out of the prompt, not
//! refused, so that clients which always send them (Codex) still work; the
//! types left out are named in `left_out`, which the response carries in the
//! `llamaedge-ignored-tools` header and the server's log (docs/responses.md).

const std = @import("std");
const shared = @import("shared");
const chat_request = @import("../chat/request.zig");
const request_tools = @import("../chat/request_tools.zig");
const reasoning_fields = @import("../chat/request_reasoning.zig");
const fields = @import("../fields.zig");
const items_mod = @import("items.zig");
const images = @import("../images.zig");

const templates = shared.templates;
const Diagnostic = shared.api_error.Diagnostic;
const ChatRequest = chat_request.ChatRequest;
const Message = templates.Message;
const Value = std.json.Value;
const typeError = fields.typeError;

/// A checked Responses request: the chat request it becomes, and what the
/// response echoes.
pub const Request = struct {
    chat: ChatRequest,
    /// The echoed fields, as JSON text.
    instructions: []const u8 = "null",
    metadata: []const u8 = "{}",
    tools: []const u8 = "[]",
    tool_choice: []const u8 = "\"auto\"",
    text: []const u8 = "{\"format\":{\"type\":\"text\"}}",
    reasoning: []const u8 = "{\"effort\":null,\"summary\":null}",
    truncation: []const u8 = "disabled",
    max_output_tokens: ?u32 = null,
    store: bool = true,
    previous_response_id: ?[]const u8 = null,
    /// The conversation's items: those of the previous response's, then the
    /// input's (a string input as a message item), what `store` keeps.
    items: []const Value = &.{},
    /// The tool types left out (hosted tools this server cannot run),
    /// comma-separated, each once; empty when none were.
    left_out: []const u8 = "",

    pub fn deinit(self: *Request) void {
        self.chat.deinit();
    }
};

/// The most `metadata` keys, as OpenAI allows.
const max_metadata_keys = 16;

/// Parses and checks a Responses request. On error.InvalidRequest `diag.err`
/// says what is wrong, naming the field's path. `history` finds the
/// conversation a `previous_response_id` continues: anything with
/// `load(arena, id) !?[]const Value` giving its items (store.zig's, or a fake).
pub fn parseRequest(allocator: std.mem.Allocator, body: []const u8, history: anytype, diag: *Diagnostic) !Request {
    return parseRequestWith(allocator, body, history, chat_request.default_image_limits, diag);
}

/// parseRequest with the host's image limits (`input_image` parts: images.zig).
pub fn parseRequestWith(allocator: std.mem.Allocator, body: []const u8, history: anytype, image_limits: images.Limits, diag: *Diagnostic) !Request {
    var parsed = Request{ .chat = .{ .arena = std.heap.ArenaAllocator.init(allocator) } };
    errdefer parsed.deinit();
    const req = &parsed.chat;
    const arena = req.arena.allocator();
    const obj = try fields.parseObject(arena, body, diag);

    req.model = try fields.optString(obj, "model", diag);
    req.stream = (try fields.optBool(obj, "stream", diag)) orelse false;
    // Usage comes with response.completed whether or not it is asked for.
    req.include_usage = true;
    parsed.max_output_tokens = try fields.optCount(obj, "max_output_tokens", diag);
    req.max_tokens = parsed.max_output_tokens;
    req.temperature = try fields.optNumberIn(obj, "temperature", 0, 2, diag);
    req.top_p = try fields.optNumberIn(obj, "top_p", 0, 1, diag);
    req.parallel_tool_calls = (try fields.optBool(obj, "parallel_tool_calls", diag)) orelse true;
    parsed.store = (try fields.optBool(obj, "store", diag)) orelse true;
    parsed.previous_response_id = try fields.optString(obj, "previous_response_id", diag);
    if (try fields.optString(obj, "truncation", diag)) |t| {
        if (!std.mem.eql(u8, t, "auto") and !std.mem.eql(u8, t, "disabled"))
            return diag.set(400, "truncation", null, "Invalid value for 'truncation': '{s}'. Supported values are: 'auto' and 'disabled'.", .{t});
        parsed.truncation = t;
    }
    parsed.metadata = try parseMetadata(arena, obj.get("metadata"), diag);

    var messages = std.ArrayList(Message).init(arena);
    var thoughts = std.ArrayList(?[]const u8).init(arena);
    if (try fields.optString(obj, "instructions", diag)) |instructions| {
        try messages.append(.{ .role = .system, .content = instructions });
        parsed.instructions = try std.json.stringifyAlloc(arena, instructions, .{});
    }
    var items = std.ArrayList(Value).init(arena);
    var image_parts = chat_request.ImageParts{ .limits = image_limits };
    if (parsed.previous_response_id) |previous| {
        const earlier = (try history.load(arena, previous)) orelse
            return diag.set(400, "previous_response_id", null, "Previous response with id '{s}' not found. Only responses created with 'store' true (the default) are kept.", .{previous});
        try items_mod.parseItems(arena, earlier, "previous_response_id", &messages, &thoughts, &image_parts, diag);
        try items.appendSlice(earlier);
    }
    const input = try items_mod.inputItems(arena, obj.get("input"), diag);
    try items_mod.parseItems(arena, input, "input", &messages, &thoughts, &image_parts, diag);
    try items.appendSlice(input);
    req.n_images = image_parts.count;
    parsed.items = items.items;
    req.messages = messages.items;
    try thoughts.appendNTimes(null, messages.items.len - thoughts.items.len);
    req.reasoning = thoughts.items;

    var left_out = std.ArrayList(u8).init(arena);
    req.tools = try parseTools(arena, obj.get("tools"), &left_out, diag);
    parsed.left_out = left_out.items;
    if (req.tools.len > 0) parsed.tools = try std.json.stringifyAlloc(arena, toolEcho(arena, obj.get("tools").?) catch unreachable, .{});
    req.tool_choice = try parseToolChoice(obj.get("tool_choice"), req.tools, diag);
    parsed.tool_choice = switch (req.tool_choice) {
        .none => "\"none\"",
        .auto => "\"auto\"",
        .required => "\"required\"",
        .function => |name| try std.fmt.allocPrint(arena, "{{\"type\":\"function\",\"name\":{s}}}", .{try std.json.stringifyAlloc(arena, name, .{})}),
    };

    if (obj.get("text")) |text| switch (text) {
        .null => {},
        .object => |t| {
            req.response_format = try parseFormat(arena, t.get("format"), diag);
            parsed.text = try std.json.stringifyAlloc(arena, text, .{});
        },
        else => return typeError(diag, "text", "an object", text),
    };
    if (req.tool_choice != .none and req.response_format != .text)
        return diag.set(400, "text.format", null, "'text.format' cannot be combined with function tools on this server: the function-call grammar and the format's grammar would conflict. Send one of them, or set 'tool_choice' to 'none'.", .{});

    // `reasoning.effort` goes to the template as the chat path's `reasoning_effort` does.
    var kwargs = std.json.ObjectMap.init(arena);
    if (obj.get("reasoning")) |r| switch (r) {
        .null => {},
        .object => |o| {
            if (o.get("effort")) |effort| if (effort != .null) try kwargs.put("reasoning_effort", effort);
            parsed.reasoning = try std.json.stringifyAlloc(arena, r, .{});
        },
        else => return typeError(diag, "reasoning", "an object", r),
    };
    req.template_kwargs = reasoning_fields.parseTemplateKwargs(arena, kwargs, diag) catch |err| switch (err) {
        // The chat path names its own field; name this one.
        error.InvalidRequest => return diag.set(400, "reasoning.effort", null, "Invalid value for 'reasoning.effort'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'.", .{}),
        else => |e| return e,
    };
    return parsed;
}

fn parseMetadata(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) ![]const u8 {
    const v = value orelse return "{}";
    switch (v) {
        .null => return "{}",
        .object => |o| {
            if (o.count() > max_metadata_keys)
                return diag.set(400, "metadata", null, "Invalid 'metadata': at most {d} keys, not {d}.", .{ max_metadata_keys, o.count() });
            var it = o.iterator();
            while (it.next()) |entry| if (entry.value_ptr.* != .string) {
                var buf: [96]u8 = undefined;
                const param = std.fmt.bufPrint(&buf, "metadata.{s}", .{entry.key_ptr.*}) catch "metadata";
                return typeError(diag, param, "a string", entry.value_ptr.*);
            };
            return std.json.stringifyAlloc(arena, v, .{});
        },
        else => return typeError(diag, "metadata", "an object", v),
    }
}

/// `tools`: function tools `{type:"function", name, description, parameters,
/// strict}`, kept as the chat path's tools (templates print them in the chat
/// shape). Any other type is a tool this server cannot run: left out, its
/// type named in `left_out`.
fn parseTools(arena: std.mem.Allocator, value: ?Value, left_out: *std.ArrayList(u8), diag: *Diagnostic) ![]const templates.Tool {
    const v = value orelse return &.{};
    const list = switch (v) {
        .null => return &.{},
        .array => |a| a.items,
        else => return typeError(diag, "tools", "an array", v),
    };
    if (list.len > request_tools.max_tools) return diag.set(400, "tools", null, "'tools' takes at most {d} tools, not {d}.", .{ request_tools.max_tools, list.len });
    var tools = std.ArrayList(templates.Tool).init(arena);
    var at_buf: [32]u8 = undefined;
    var param_buf: [96]u8 = undefined;
    for (list, 0..) |item, i| {
        const at = std.fmt.bufPrint(&at_buf, "tools[{d}]", .{i}) catch "tools";
        if (item != .object) return typeError(diag, at, "an object", item);
        const o = item.object;
        const kind = try items_mod.required(o, "type", at, &param_buf, diag);
        if (!std.mem.eql(u8, kind, "function")) {
            var names = std.mem.splitScalar(u8, left_out.items, ',');
            const seen = while (names.next()) |n| {
                if (std.mem.eql(u8, n, kind)) break true;
            } else false;
            if (!seen) {
                if (left_out.items.len > 0) try left_out.append(',');
                try left_out.appendSlice(kind);
            }
            continue;
        }
        const name = try items_mod.required(o, "name", at, &param_buf, diag);
        if (!request_tools.isToolName(name)) {
            const p = std.fmt.bufPrint(&param_buf, "{s}.name", .{at}) catch at;
            return diag.set(400, p, null, "Invalid '{s}': '{s}'. A function name has 1 to 64 characters among a-z, A-Z, 0-9, underscores and dashes.", .{ p, name });
        }
        for (tools.items) |earlier| if (std.mem.eql(u8, earlier.name, name)) {
            const p = std.fmt.bufPrint(&param_buf, "{s}.name", .{at}) catch at;
            return diag.set(400, p, null, "Invalid '{s}': the function '{s}' is declared twice.", .{ p, name });
        };
        const description = try fields.optStringAt(o, "description", "tools.description", diag);
        var parameters: Value = .{ .object = std.json.ObjectMap.init(arena) };
        try parameters.object.put("type", .{ .string = "object" });
        try parameters.object.put("properties", .{ .object = std.json.ObjectMap.init(arena) });
        if (o.get("parameters")) |p| switch (p) {
            .null => {},
            .object => parameters = p,
            else => {
                const param = std.fmt.bufPrint(&param_buf, "{s}.parameters", .{at}) catch at;
                return typeError(diag, param, "an object (a JSON Schema)", p);
            },
        };
        const strict = (try fields.optBool(o, "strict", diag)) orelse false;
        var function = std.json.ObjectMap.init(arena);
        try function.put("name", .{ .string = name });
        if (description) |d| try function.put("description", .{ .string = d });
        try function.put("parameters", parameters);
        var tool = std.json.ObjectMap.init(arena);
        try tool.put("type", .{ .string = "function" });
        try tool.put("function", .{ .object = function });
        try tools.append(.{
            .name = name,
            .description = description,
            .parameters = try std.json.stringifyAlloc(arena, parameters, .{}),
            .strict = strict,
            .value = .{ .object = tool },
        });
    }
    return tools.items;
}

/// The function tools as the client sent them, for the response's `tools`.
/// `value` has been checked by parseTools.
fn toolEcho(arena: std.mem.Allocator, value: Value) !Value {
    var echo = std.json.Array.init(arena);
    for (value.array.items) |item| {
        if (std.mem.eql(u8, item.object.get("type").?.string, "function")) try echo.append(item);
    }
    return .{ .array = echo };
}

/// `tool_choice`: "none", "auto", "required" or `{type:"function", name}`.
/// A hosted tool's choice (`{type:"web_search"}`) asks for a tool this server
/// cannot run: refused, since the model could not honour it.
fn parseToolChoice(value: ?Value, tools: []const templates.Tool, diag: *Diagnostic) !request_tools.ToolChoice {
    const v = value orelse Value.null;
    const choice: request_tools.ToolChoice = switch (v) {
        .null => return if (tools.len > 0) .auto else .none,
        .string => |s| if (std.mem.eql(u8, s, "none")) .none else if (std.mem.eql(u8, s, "auto")) .auto else if (std.mem.eql(u8, s, "required")) .required else
            return diag.set(400, "tool_choice", null, "Invalid value for 'tool_choice': '{s}'. Supported values are: 'none', 'auto', 'required' or an object naming a function.", .{s}),
        .object => |o| blk: {
            const kind = (try fields.optStringAt(o, "type", "tool_choice.type", diag)) orelse
                return diag.set(400, "tool_choice.type", null, "Missing required parameter: 'tool_choice.type'.", .{});
            if (!std.mem.eql(u8, kind, "function"))
                return diag.set(400, "tool_choice.type", null, "Invalid value for 'tool_choice.type': '{s}'. This server runs no hosted tools; it supports 'function'.", .{kind});
            const name = (try fields.optStringAt(o, "name", "tool_choice.name", diag)) orelse
                return diag.set(400, "tool_choice.name", null, "Missing required parameter: 'tool_choice.name'.", .{});
            break :blk .{ .function = name };
        },
        else => return typeError(diag, "tool_choice", "a string or an object", v),
    };
    if ((choice == .function or choice == .required) and tools.len == 0)
        return diag.set(400, "tool_choice", null, "Invalid value for 'tool_choice': it asks for a function call, but 'tools' declares no functions.", .{});
    if (choice == .function) {
        for (tools) |t| {
            if (std.mem.eql(u8, t.name, choice.function)) break;
        } else return diag.set(400, "tool_choice.name", null, "Invalid value for 'tool_choice.name': no function named '{s}' is declared in 'tools'.", .{choice.function});
    }
    return choice;
}

/// `text.format`: `text`, `json_object`, or `json_schema` with its `schema`
/// (and a `name`) beside the type, unlike the chat API's nesting.
fn parseFormat(arena: std.mem.Allocator, value: ?Value, diag: *Diagnostic) !chat_request.ResponseFormat {
    const v = value orelse return .text;
    if (v == .null) return .text;
    if (v != .object) return typeError(diag, "text.format", "an object", v);
    const kind = (try fields.optStringAt(v.object, "type", "text.format.type", diag)) orelse
        return diag.set(400, "text.format.type", null, "Missing required parameter: 'text.format.type'.", .{});
    if (std.mem.eql(u8, kind, "text")) return .text;
    if (std.mem.eql(u8, kind, "json_object")) return .json_object;
    if (std.mem.eql(u8, kind, "json_schema")) {
        _ = (try fields.optStringAt(v.object, "name", "text.format.name", diag)) orelse
            return diag.set(400, "text.format.name", null, "Missing required parameter: 'text.format.name'.", .{});
        const schema = v.object.get("schema") orelse return diag.set(400, "text.format.schema", null, "Missing required parameter: 'text.format.schema'.", .{});
        if (schema != .object) return typeError(diag, "text.format.schema", "an object (a JSON schema)", schema);
        return .{ .json_schema = try std.json.stringifyAlloc(arena, schema, .{}) };
    }
    return diag.set(400, "text.format.type", null, "Invalid value for 'text.format.type': '{s}'. Supported values are: 'text', 'json_object' and 'json_schema'.", .{kind});
}

const testing = std.testing;

/// No stored responses.
pub const NoHistory = struct {
    pub fn load(_: NoHistory, _: std.mem.Allocator, _: []const u8) !?[]const Value {
        return null;
    }
};

fn expectInvalid(body: []const u8, param: []const u8, message_part: []const u8) !void {
    var diag = Diagnostic{};
    try testing.expectError(error.InvalidRequest, parseRequest(testing.allocator, body, NoHistory{}, &diag));
    try testing.expectEqual(@as(u16, 400), diag.err.status);
    try testing.expectEqualStrings(param, diag.err.param.?);
    try shared.test_support.expectContains(diag.err.message, message_part);
}

test "a Responses request becomes a chat request" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator,
        \\{"model":"m","instructions":"Be brief.","max_output_tokens":50,"temperature":0.5,"metadata":{"k":"v"},
        \\"input":[{"role":"user","content":"weather?"},
        \\{"type":"reasoning","id":"rs_1","summary":[],"content":[{"type":"reasoning_text","text":"look it up"}]},
        \\{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
        \\{"type":"function_call_output","call_id":"call_1","output":"sunny"},
        \\{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Sunny.","annotations":[]}]},
        \\{"type":"message","role":"developer","content":[{"type":"input_text","text":"dev"}]}],
        \\"tools":[{"type":"function","name":"get_weather","description":"d","parameters":{"type":"object"},"strict":true},{"type":"web_search"},{"type":"web_search"},{"type":"local_shell"}],
        \\"tool_choice":"required","parallel_tool_calls":false,"text":{"format":{"type":"text"}},"reasoning":{"effort":"low"}}
    , NoHistory{}, &diag);
    defer parsed.deinit();
    const req = &parsed.chat;
    try testing.expectEqual(@as(?u32, 50), req.max_tokens);
    try testing.expectEqual(@as(usize, 6), req.messages.len);
    try testing.expectEqual(templates.Role.system, req.messages[0].role);
    try testing.expectEqualStrings("weather?", req.messages[1].content);
    try testing.expectEqual(templates.Role.assistant, req.messages[2].role);
    try testing.expectEqualStrings("{\"city\":\"Paris\"}", req.messages[2].tool_calls[0].arguments);
    try testing.expectEqualStrings("look it up", req.reasoning[2].?);
    try testing.expectEqual(templates.Role.tool, req.messages[3].role);
    try testing.expectEqualStrings("call_1", req.messages[3].tool_call_id.?);
    try testing.expectEqualStrings("Sunny.", req.messages[4].content);
    try testing.expectEqual(templates.Role.system, req.messages[5].role);
    try testing.expectEqual(@as(usize, 1), req.tools.len);
    try testing.expect(req.tools[0].strict);
    try testing.expectEqualStrings("web_search,local_shell", parsed.left_out);
    try testing.expectEqual(request_tools.ToolChoice.required, req.tool_choice);
    try testing.expect(!req.parallel_tool_calls);
    try testing.expectEqualStrings("{\"reasoning_effort\":\"low\"}", req.template_kwargs.?);
    try testing.expectEqualStrings("{\"k\":\"v\"}", parsed.metadata);
    try testing.expectEqualStrings("\"Be brief.\"", parsed.instructions);
    // the echo keeps the function tool as it came; templates see the chat shape
    try shared.test_support.expectContains(parsed.tools, "\"strict\":true");
    try testing.expect(std.mem.indexOf(u8, parsed.tools, "web_search") == null);
    const printed = try std.json.stringifyAlloc(testing.allocator, req.tools[0].value, .{});
    defer testing.allocator.free(printed);
    try testing.expectEqualStrings("{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}}", printed);
}

test "a string input is one user message; json_schema comes beside the type" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator, "{\"input\":\"hi\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"x\",\"schema\":{\"type\":\"object\"}}}}", NoHistory{}, &diag);
    defer parsed.deinit();
    try testing.expectEqual(@as(usize, 1), parsed.chat.messages.len);
    try testing.expectEqualStrings("{\"type\":\"object\"}", parsed.chat.response_format.json_schema);
    try testing.expect(parsed.store);
}

test "Responses requests refused, each naming its path" {
    try expectInvalid("{}", "input", "Missing required parameter");
    try expectInvalid("{\"input\":5}", "input", "a string or an array");
    try expectInvalid("{\"input\":[]}", "input", "empty array");
    try expectInvalid("{\"input\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "input[0].role", "'robot'");
    try expectInvalid("{\"input\":[\"hi\",{\"role\":\"user\",\"content\":\"x\"}]}", "input[0]", "expected an object");
    try expectInvalid("{\"input\":[{\"role\":\"user\",\"content\":\"x\"},{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}", "input[1].call_id", "Missing required");
    try expectInvalid("{\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\",\"arguments\":\"{oops\"}]}", "input[0].arguments", "JSON object");
    try expectInvalid("{\"input\":[{\"role\":\"user\",\"content\":\"x\"},{\"type\":\"function_call_output\",\"call_id\":\"c9\",\"output\":\"r\"}]}", "input[1].call_id", "'c9'");
    try expectInvalid("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"x\"}]}]}", "input[0].content[0].image_url", "data URL");
    try expectInvalid("{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"file_id\":\"f\"}]}]}", "input[0].content[0].image_url", "not file ids");
    try expectInvalid("{\"input\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"x\"}]}]}", "input[0].content[0]", "in user messages");
    try expectInvalid("{\"input\":[{\"type\":\"item_reference\",\"id\":\"x\"}]}", "input[0].type", "'item_reference'");
    try expectInvalid("{\"input\":\"x\",\"tools\":[{\"type\":\"function\"}]}", "tools[0].name", "Missing required");
    try expectInvalid("{\"input\":\"x\",\"tool_choice\":\"required\"}", "tool_choice", "declares no functions");
    try expectInvalid("{\"input\":\"x\",\"tool_choice\":{\"type\":\"web_search\"}}", "tool_choice.type", "no hosted tools");
    try expectInvalid("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\"}}}", "text.format.schema", "Missing required");
    try expectInvalid("{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "text.format.type", "'yaml'");
    try expectInvalid("{\"input\":\"x\",\"reasoning\":{\"effort\":\"huge\"}}", "reasoning.effort", "Supported values");
    try expectInvalid("{\"input\":\"x\",\"metadata\":{\"k\":1}}", "metadata.k", "a string");
    try expectInvalid("{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens", "at least 1");
    try expectInvalid("{\"input\":\"x\",\"temperature\":3}", "temperature", "between 0 and 2");
    try expectInvalid("{\"input\":\"x\",\"truncation\":\"middle\"}", "truncation", "'middle'");
}

/// One stored conversation: a question and the call it got.
const OneCall = struct {
    pub fn load(_: OneCall, arena: std.mem.Allocator, id: []const u8) !?[]const Value {
        if (!std.mem.eql(u8, id, "resp_1")) return null;
        const items = try std.json.parseFromSliceLeaky(Value, arena,
            \\[{"type":"message","role":"user","content":"weather?"},
            \\{"id":"fc_1","type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{}","status":"completed"}]
        , .{});
        return items.array.items;
    }
};

test "previous_response_id: the stored items come first, and errors still name the input's own index" {
    var diag = Diagnostic{};
    var parsed = try parseRequest(testing.allocator, "{\"previous_response_id\":\"resp_1\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"call_1\",\"output\":\"sunny\"}]}", OneCall{}, &diag);
    defer parsed.deinit();
    const messages = parsed.chat.messages;
    try testing.expectEqual(@as(usize, 3), messages.len);
    try testing.expectEqualStrings("call_1", messages[1].tool_calls[0].id);
    try testing.expectEqual(templates.Role.tool, messages[2].role);
    try testing.expectEqual(@as(usize, 3), parsed.items.len);

    try testing.expectError(error.InvalidRequest, parseRequest(testing.allocator, "{\"previous_response_id\":\"resp_1\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"call_9\",\"output\":\"x\"}]}", OneCall{}, &diag));
    try testing.expectEqualStrings("input[0].call_id", diag.err.param.?);
    try testing.expectError(error.InvalidRequest, parseRequest(testing.allocator, "{\"previous_response_id\":\"resp_2\",\"input\":\"x\"}", OneCall{}, &diag));
    try testing.expectEqualStrings("previous_response_id", diag.err.param.?);
}
