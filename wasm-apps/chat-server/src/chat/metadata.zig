//! The WASI-NN options of a chat request (`set_input` index 1, WasmEdge's
//! names): sampling, the token limit and the output constraint.

const std = @import("std");
const request = @import("request.zig");

const ChatRequest = request.ChatRequest;
const Diagnostic = @import("shared").api_error.Diagnostic;
const Role = @import("shared").templates.Role;

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
        if (c.triggers.len > 0) try field(w, &first, "grammar-triggers", c.triggers);
    } else switch (req.response_format) {
        .text => {},
        .json_object => try field(w, &first, "grammar", @as([]const u8, json_object_grammar)),
        // WasmEdge takes the schema as a string holding JSON.
        .json_schema => |schema| try field(w, &first, "json-schema", schema),
    }
    if (opts.preserved.len > 0) try field(w, &first, "preserved-tokens", opts.preserved);
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
        []const []const u8 => {
            try w.writeByte('[');
            for (value, 0..) |item, i| {
                if (i > 0) try w.writeByte(',');
                try std.json.encodeJsonString(item, .{}, w);
            }
            try w.writeByte(']');
        },
        else => try w.print("{d}", .{value}),
    }
}

const testing = std.testing;

test "a tool conversation is parsed" {
    var diag = Diagnostic{};
    var req = try request.parseChatRequest(testing.allocator,
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
    try testing.expectEqual(Role.tool, req.messages[2].role);
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
}

test "metadata carries the sampling options, the limit and the grammar" {
    var diag = Diagnostic{};
    var req = try request.parseChatRequest(testing.allocator,
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
    const parsed = try std.json.parseFromSlice(std.json.Value, testing.allocator, out.items, .{});
    defer parsed.deinit();
    try testing.expectEqualStrings(json_object_grammar, parsed.value.object.get("grammar").?.string);
    try testing.expect(parsed.value.object.get("n-predict") == null);
}
