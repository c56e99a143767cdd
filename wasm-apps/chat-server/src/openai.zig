//! The OpenAI chat completions API as data: the request body parsed and
//! checked into a `ChatRequest`, and the JSON of responses, stream chunks,
//! errors and the WASI-NN metadata built from a request. Pure translation: no
//! I/O, no model.

const std = @import("std");
const templates = @import("templates.zig");

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

pub const Finish = enum { stop, length };

pub const ChatRequest = struct {
    arena: std.heap.ArenaAllocator,
    model: ?[]const u8 = null,
    messages: []Message = &.{},
    stream: bool = false,
    include_usage: bool = false,
    max_tokens: ?u32 = null,
    temperature: ?f64 = null,
    top_p: ?f64 = null,
    seed: ?i64 = null,
    presence_penalty: ?f64 = null,
    frequency_penalty: ?f64 = null,
    stop: []const []const u8 = &.{},
    response_format: ResponseFormat = .text,

    pub fn deinit(self: *ChatRequest) void {
        self.arena.deinit();
    }
};

pub const max_stop_strings = 4;

/// Parses and checks a chat completions request body. On error.InvalidRequest
/// `diag.err` says what is wrong. Fields this server does not know are ignored;
/// fields it knows but cannot honour are refused rather than dropped.
pub fn parseChatRequest(allocator: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !ChatRequest {
    var req = ChatRequest{ .arena = std.heap.ArenaAllocator.init(allocator) };
    errdefer req.deinit();
    const arena = req.arena.allocator();

    const root = std.json.parseFromSliceLeaky(Value, arena, body, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return diag.set(400, null, null, "We could not parse the JSON body of your request ({s}). The body must be a JSON object.", .{switch (err) {
            error.DuplicateField => "a field appears twice",
            error.ValueTooLong => "a value is too long",
            else => "it is not valid JSON",
        }}),
    };
    if (root != .object) return diag.set(400, null, null, "The request body must be a JSON object, not {s}.", .{typeName(root)});
    const obj = root.object;

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
    try refuseUnsupported(obj, diag);
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
            if (isToolRole(role_value.string))
                return diag.set(400, role_param, null, "Messages with role '{s}' are not supported: this server does not call tools.", .{role_value.string});
            return diag.set(400, role_param, null, "Invalid value for '{s}': '{s}'. Supported values are: 'system', 'developer', 'user' and 'assistant'.", .{ role_param, role_value.string });
        };
        const content_param = std.fmt.bufPrint(&param_buf, "messages[{d}].content", .{i}) catch "messages";
        messages[i] = .{ .role = role, .content = try parseContent(arena, item.object.get("content"), role, content_param, diag) };
    }
    return messages;
}

fn parseRole(text: []const u8) ?templates.Role {
    if (std.mem.eql(u8, text, "developer")) return .system; // OpenAI's newer name for the system role
    return std.meta.stringToEnum(templates.Role, text);
}

fn isToolRole(text: []const u8) bool {
    return std.mem.eql(u8, text, "tool") or std.mem.eql(u8, text, "function");
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
    if (try optInteger(obj, "n", diag)) |n| if (n != 1)
        return diag.set(400, "n", null, "'n' must be 1: this server generates one choice per request (got {d}).", .{n});
    if (try nonEmptyArray(obj, "tools", diag))
        return diag.set(400, "tools", null, "'tools' is not supported: this server does not call tools. Leave 'tools' out.", .{});
    if (try nonEmptyArray(obj, "functions", diag))
        return diag.set(400, "functions", null, "'functions' is not supported: this server does not call functions. Leave 'functions' out.", .{});
    if ((try optBool(obj, "logprobs", diag)) orelse false)
        return diag.set(400, "logprobs", null, "'logprobs' is not supported by this server. Leave it out or set it to false.", .{});
    if ((try optInteger(obj, "top_logprobs", diag) orelse 0) != 0)
        return diag.set(400, "top_logprobs", null, "'top_logprobs' is not supported by this server.", .{});
    if (obj.get("logit_bias")) |bias| switch (bias) {
        .null => {},
        .object => |o| if (o.count() > 0)
            return diag.set(400, "logit_bias", null, "'logit_bias' is not supported by this server. Leave it out.", .{}),
        else => return typeError(diag, "logit_bias", "an object", bias),
    };
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

/// The metadata JSON (`set_input` index 1) for a request: sampling options,
/// the token limit and the output constraint. Keys follow WasmEdge's names.
pub fn appendMetadata(out: *std.ArrayList(u8), req: *const ChatRequest, n_predict: ?u32) !void {
    const w = out.writer();
    var first = true;
    try w.writeByte('{');
    if (n_predict) |n| try field(w, &first, "n-predict", n);
    if (req.temperature) |x| try field(w, &first, "temp", x);
    if (req.top_p) |x| try field(w, &first, "top-p", x);
    if (req.seed) |x| try field(w, &first, "seed", x);
    if (req.presence_penalty) |x| try field(w, &first, "presence-penalty", x);
    if (req.frequency_penalty) |x| try field(w, &first, "frequency-penalty", x);
    switch (req.response_format) {
        .text => {},
        .json_object => try field(w, &first, "grammar", @as([]const u8, json_object_grammar)),
        // WasmEdge takes the schema as a string holding JSON.
        .json_schema => |schema| try field(w, &first, "json-schema", schema),
    }
    try w.writeByte('}');
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
    content: []const u8,
    /// The last choice chunk, next to its finish_reason.
    empty,
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
    const w = out.writer();
    try w.writeAll("data: ");
    try appendEnvelope(w, env, "chat.completion.chunk");
    try w.writeAll(",\"choices\":[{\"index\":0,\"delta\":");
    switch (delta) {
        .role => try w.writeAll("{\"role\":\"assistant\",\"content\":\"\"}"),
        .content => |text| {
            try w.writeAll("{\"content\":");
            try std.json.encodeJsonString(text, .{}, w);
            try w.writeByte('}');
        },
        .empty => try w.writeAll("{}"),
    }
    try w.writeAll(",\"logprobs\":null,\"finish_reason\":");
    if (finish) |f| try w.print("\"{s}\"", .{@tagName(f)}) else try w.writeAll("null");
    try w.writeAll("}]}\n\n");
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

/// A whole `chat.completion` object.
pub fn appendCompletion(out: *std.ArrayList(u8), env: Envelope, content: []const u8, finish: Finish, usage: Usage) !void {
    const w = out.writer();
    try appendEnvelope(w, env, "chat.completion");
    try w.writeAll(",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    try std.json.encodeJsonString(content, .{}, w);
    try w.print("}},\"logprobs\":null,\"finish_reason\":\"{s}\"}}],", .{@tagName(finish)});
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
    var diag = Diagnostic{};
    try testing.expectError(error.InvalidRequest, parseChatRequest(testing.allocator, body, &diag));
    try testing.expectEqual(status, diag.err.status);
    if (param) |p| try testing.expectEqualStrings(p, diag.err.param.?) else try testing.expect(diag.err.param == null);
    if (std.mem.indexOf(u8, diag.err.message, message_part) == null) {
        std.debug.print("message was: {s}\n", .{diag.err.message});
        return error.TestUnexpectedResult;
    }
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
    try expectInvalid("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].role", "does not call tools");
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
    try expectInvalid("{" ++ ok_messages ++ ",\"n\":2}", 400, "n", "'n' must be 1");
    try expectInvalid("{" ++ ok_messages ++ ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools", "not supported");
    try expectInvalid("{" ++ ok_messages ++ ",\"logprobs\":true}", 400, "logprobs", "not supported");
    try expectInvalid("{" ++ ok_messages ++ ",\"logit_bias\":{\"1\":5}}", 400, "logit_bias", "not supported");
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
    try appendMetadata(&out, &req, 128);
    try testing.expectEqualStrings(
        \\{"n-predict":128,"temp":0.7,"top-p":0.9,"seed":42,"presence-penalty":1,"frequency-penalty":0.5,"json-schema":"{\"type\":\"object\"}"}
    , out.items);

    req.response_format = .json_object;
    out.clearRetainingCapacity();
    try appendMetadata(&out, &req, null);
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
