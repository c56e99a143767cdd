//! POST /v1/chat/completions: the request body parsed and checked into a
//! `ChatRequest`, which every chat route (the Anthropic one too) hands to the
//! chat path. Pure translation: no I/O, no model.

const std = @import("std");
const shared = @import("shared");
const fields = @import("../fields.zig");
const tools = @import("request_tools.zig");
const thinking = @import("request_reasoning.zig");
const images = @import("../images.zig");

const templates = shared.templates;
const Diagnostic = shared.api_error.Diagnostic;
const Message = templates.Message;
const Value = std.json.Value;
const typeError = fields.typeError;

pub const ResponseFormat = union(enum) {
    text,
    json_object,
    /// The JSON schema, serialized.
    json_schema: []const u8,
};

/// The most choices one request may ask for (`n`).
pub const max_choices = 8;

/// OpenAI's limits on `top_logprobs` and on the number of tools.
pub const max_top_logprobs = 20;

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
    tool_choice: tools.ToolChoice = .none,
    parallel_tool_calls: bool = true,
    n: u8 = 1,
    logprobs: bool = false,
    top_logprobs: u8 = 0,
    /// The bias object with token-id keys, serialized; null without one.
    logit_bias: ?[]const u8 = null,
    /// Extra variables for the model's own template, a JSON object (see request_reasoning.zig).
    template_kwargs: ?[]const u8 = null,
    /// Each message's reasoning_content, by index (null for most).
    reasoning: []const ?[]const u8 = &.{},
    /// The images in the messages, each already a tag in its message's text
    /// (images.zig); the caller refuses them for a model without vision.
    n_images: u32 = 0,

    pub fn deinit(self: *ChatRequest) void {
        self.arena.deinit();
    }
};

pub const max_stop_strings = 4;

/// The image limits of a host that passes none (shared/defaults.zig).
pub const default_image_limits = images.Limits{ .bytes_max = shared.defaults.image_bytes_max, .pixels_max = shared.defaults.image_pixels_max };

/// parseChatRequestWith the default image limits.
pub fn parseChatRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !ChatRequest {
    return parseChatRequestWith(allocator, body, default_image_limits, diag);
}

/// Parses and checks a chat completions request body. On error.InvalidRequest
/// `diag.err` says what is wrong. Fields this server does not know are ignored;
/// fields it knows but cannot honour are refused rather than dropped.
pub fn parseChatRequestWith(allocator: std.mem.Allocator, body: []const u8, image_limits: images.Limits, diag: *Diagnostic) !ChatRequest {
    var req = ChatRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();

    const obj = try fields.parseObject(arena, body, diag);

    req.model = try fields.optString(obj, "model", diag);
    var parts = ImageParts{ .limits = image_limits };
    req.messages = try parseMessages(arena, obj.get("messages"), &parts, diag);
    req.n_images = parts.count;
    req.stream = (try fields.optBool(obj, "stream", diag)) orelse false;
    if (obj.get("stream_options")) |options| switch (options) {
        .null => {},
        .object => |o| req.include_usage = (try fields.optBool(o, "include_usage", diag)) orelse false,
        else => return typeError(diag, "stream_options", "an object", options),
    };

    const max_completion = try fields.optCount(obj, "max_completion_tokens", diag);
    req.max_tokens = max_completion orelse try fields.optCount(obj, "max_tokens", diag);
    req.temperature = try fields.optNumberIn(obj, "temperature", 0, 2, diag);
    req.top_p = try fields.optNumberIn(obj, "top_p", 0, 1, diag);
    req.presence_penalty = try fields.optNumberIn(obj, "presence_penalty", -2, 2, diag);
    req.frequency_penalty = try fields.optNumberIn(obj, "frequency_penalty", -2, 2, diag);
    req.seed = try fields.optInteger(obj, "seed", diag);
    req.stop = try parseStop(arena, obj.get("stop"), diag);
    req.response_format = try parseResponseFormat(arena, obj.get("response_format"), diag);
    req.tools = try tools.parseTools(arena, obj.get("tools"), diag);
    req.tool_choice = try tools.parseToolChoice(obj.get("tool_choice"), req.tools, diag);
    req.parallel_tool_calls = (try fields.optBool(obj, "parallel_tool_calls", diag)) orelse true;
    if (req.tool_choice != .none and req.response_format != .text)
        return diag.set(400, "response_format", null, "'response_format' cannot be combined with 'tools' on this server: the function-call grammar and the response grammar would conflict. Send one of them, or set 'tool_choice' to 'none'.", .{});
    if (try fields.optInteger(obj, "n", diag)) |n| {
        if (n < 1 or n > max_choices)
            return diag.set(400, "n", null, "Invalid 'n': {d}. This server generates between 1 and {d} choices per request.", .{ n, max_choices });
        req.n = @intCast(n);
    }
    req.logprobs = (try fields.optBool(obj, "logprobs", diag)) orelse false;
    if (try fields.optInteger(obj, "top_logprobs", diag)) |k| {
        if (k < 0 or k > max_top_logprobs)
            return diag.set(400, "top_logprobs", null, "Invalid 'top_logprobs': {d}. It must be between 0 and {d}.", .{ k, max_top_logprobs });
        if (!req.logprobs and k > 0)
            return diag.set(400, "top_logprobs", null, "'top_logprobs' needs 'logprobs' set to true.", .{});
        req.top_logprobs = @intCast(k);
    }
    req.logit_bias = try parseLogitBias(arena, obj.get("logit_bias"), diag);
    req.template_kwargs = try thinking.parseTemplateKwargs(arena, obj, diag);
    req.reasoning = try thinking.parseHistory(arena, obj, diag);
    try refuseUnsupported(obj, diag);
    try checkToolHistory(req.messages, diag);
    return req;
}

/// The images met while parsing the messages, and their limits. Every
/// route's parser (this one, Anthropic's, the Responses API's) turns its
/// images into tags here.
pub const ImageParts = struct {
    limits: images.Limits,
    count: u32 = 0,

    pub const Form = enum { url, base64 };

    /// The tag of an image given as a data URL or a bare base64 payload,
    /// counted. A bad one is a 400 on `param`, its message after `prefix`.
    pub fn tag(self: *ImageParts, arena: std.mem.Allocator, data: []const u8, form: Form, param: []const u8, prefix: []const u8, diag: *Diagnostic) ![]const u8 {
        var problem: images.Problem = .not_image;
        const checked = (switch (form) {
            .url => images.fromUrl(arena, data, self.limits, &problem),
            .base64 => images.fromBase64(arena, data, self.limits, &problem),
        }) catch |err| switch (err) {
            error.BadImage => {
                var buf: [200]u8 = undefined;
                return diag.set(400, param, null, "{s}{s}", .{ prefix, images.describe(&buf, problem, self.limits) });
            },
            else => |e| return e,
        };
        self.count += 1;
        return checked.tag;
    }
};

fn parseMessages(arena: std.mem.Allocator, value: ?Value, parts: *ImageParts, diag: *Diagnostic) ![]Message {
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
        if (role == .assistant) m.tool_calls = try tools.parseToolCalls(arena, o.get("tool_calls"), i, diag);
        const content_param = std.fmt.bufPrint(&param_buf, "messages[{d}].content", .{i}) catch "messages";
        m.content = try parseContent(arena, o.get("content"), role, content_param, parts, diag);
        const name_param = std.fmt.bufPrint(&param_buf, "messages[{d}].name", .{i}) catch "messages";
        m.name = try fields.optStringAt(o, "name", name_param, diag);
        if (role == .tool) {
            const id_param = std.fmt.bufPrint(&param_buf, "messages[{d}].tool_call_id", .{i}) catch "messages";
            m.tool_call_id = (try fields.optStringAt(o, "tool_call_id", id_param, diag)) orelse
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

/// A string, or an array of `{type:"text",text}` and `{type:"image_url",image_url}`
/// parts joined with newlines, each image as its tag (images.zig).
fn parseContent(arena: std.mem.Allocator, value: ?Value, role: templates.Role, param: []const u8, images_seen: *ImageParts, diag: *Diagnostic) ![]const u8 {
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
                if (std.mem.eql(u8, kind.string, "image_url")) {
                    if (j > 0) try text.append('\n');
                    try text.appendSlice(try imagePart(arena, part.object, part_param, images_seen, diag));
                    continue;
                }
                if (!std.mem.eql(u8, kind.string, "text"))
                    return diag.set(400, part_param, null, "Content parts of type '{s}' are not supported: send 'text' or 'image_url' parts.", .{kind.string});
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

/// An `image_url` part (`{"url": ..., "detail": ...}`, or the URL alone) as its tag.
fn imagePart(arena: std.mem.Allocator, part: std.json.ObjectMap, param: []const u8, seen: *ImageParts, diag: *Diagnostic) ![]const u8 {
    const image_url = part.get("image_url") orelse Value.null;
    const url = switch (image_url) {
        .string => |s| s,
        .object => |o| switch (o.get("url") orelse Value.null) {
            .string => |s| s,
            else => |v| return typeError(diag, param, "an image_url with a string 'url'", v),
        },
        else => return typeError(diag, param, "an 'image_url' object with a 'url'", image_url),
    };
    return seen.tag(arena, url, .url, param, "", diag);
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

const testing = std.testing;

fn expectInvalid(body: []const u8, status: u16, param: ?[]const u8, message_part: []const u8) !void {
    try shared.test_support.expectInvalid(parseChatRequest, body, status, param, message_part);
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
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}", 400, "messages[0].content[0]", "string 'url'");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]}]}", 400, "messages[0].content[0]", "not fetched");
    try expectInvalid("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", 400, "messages[0].content[0]", "'input_audio' are not supported");
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
    try expectInvalid("{" ++ ok_messages ++ ",\"response_format\":{\"type\":\"yaml\"}}", 400, "response_format.type", "'yaml'");
    try expectInvalid("{" ++ ok_messages ++ ",\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format.json_schema", "expected an object");
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
