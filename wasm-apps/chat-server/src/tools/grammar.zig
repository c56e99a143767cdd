//! Function calling, the grammar: what keeps a call well-formed as the model
//! writes it (a JSON Schema per function, wrapped in the format's markup, and
//! lazy for tool_choice "auto"), for the host's metadata.

const std = @import("std");
const shared = @import("shared");
const formats = @import("formats.zig");
const ToolChoice = @import("../chat/request_tools.zig").ToolChoice;
const Constraint = @import("../chat/metadata.zig").Constraint;

const Format = formats.Format;
const Tool = shared.templates.Tool;
const toolFrom = shared.test_support.toolFrom;
const hermes_open = formats.hermes_open;
const hermes_close = formats.hermes_close;
const mistral_open = formats.mistral_open;
const generic_key = formats.generic_key;
const gemma_open = formats.gemma_open;
const gemma_close = formats.gemma_close;
const detectFormat = formats.detectFormat;

/// The grammar for `tool_choice` in `format`: null for "none"; for
/// "required" or a named function a grammar that admits only a call (one
/// object schema per function: the name as a constant, the arguments by the
/// function's schema), wrapped in the format's markup; for "auto" the same,
/// lazy, armed by the format's opening marker. Allocates in `arena`.
///
/// The XML form (`qwen_xml`) and Gemma 4's form cannot be written as a JSON
/// Schema, the only grammar the host builds with a prefix: a required or
/// named call is held to a Hermes JSON body inside the format's call markers,
/// which the format's reader takes too; "auto" gets no grammar, since one
/// armed at the opening marker would force JSON where the model goes on to
/// write its own form.
pub fn constraint(arena: std.mem.Allocator, format: Format, tools: []const Tool, choice: ToolChoice, parallel: bool) !?Constraint {
    const args_key = if (format == .llama3) "parameters" else "arguments";
    var one = std.ArrayList(u8).init(arena);
    const w = one.writer();
    var selected: usize = 0;
    for (tools) |t| {
        switch (choice) {
            .none => return null,
            .function => |name| if (!std.mem.eql(u8, name, t.name)) continue,
            else => {},
        }
        try w.writeAll(if (selected == 0) "" else ",");
        try w.writeAll("{\"type\":\"object\",\"properties\":{\"name\":{\"const\":");
        try std.json.encodeJsonString(t.name, .{}, w);
        try w.print("}},\"{s}\":{s}}},\"required\":[\"name\",\"{s}\"]}}", .{ args_key, t.parameters, args_key });
        selected += 1;
    }
    if (selected == 0) return null;
    const call_schema = if (selected == 1) one.items else try std.fmt.allocPrint(arena, "{{\"anyOf\":[{s}]}}", .{one.items});
    const list_schema = try std.fmt.allocPrint(arena, "{{\"type\":\"array\",\"items\":{s},\"minItems\":1{s}}}", .{ call_schema, if (parallel) "" else ",\"maxItems\":1" });
    const lazy = choice == .auto;
    return switch (format) {
        .hermes => .{ .schema = call_schema, .prefix = hermes_open ++ "\n", .suffix = "\n" ++ hermes_close, .triggers = if (lazy) &.{hermes_open} else &.{} },
        .qwen_xml => if (lazy) null else .{ .schema = call_schema, .prefix = hermes_open ++ "\n", .suffix = "\n" ++ hermes_close },
        .gemma4 => if (lazy) null else .{ .schema = call_schema, .prefix = gemma_open, .suffix = gemma_close },
        .llama3 => .{ .schema = call_schema, .triggers = if (lazy) &.{"{\"name\""} else &.{} },
        .mistral => .{ .schema = list_schema, .prefix = mistral_open, .triggers = if (lazy) &.{mistral_open} else &.{} },
        .generic => .{ .schema = list_schema, .prefix = "{" ++ generic_key ++ ": ", .suffix = "}", .triggers = if (lazy) &.{"{" ++ generic_key} else &.{} },
    };
}

const testing = std.testing;

test "the grammar: one schema per function, the format's markup, lazy for auto" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tools = [_]Tool{
        try toolFrom(a, "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}"),
        try toolFrom(a, "{\"type\":\"function\",\"function\":{\"name\":\"g\",\"parameters\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}}}}}"),
    };
    const req = (try constraint(a, .hermes, &tools, .required, true)).?;
    try testing.expectEqualStrings("<tool_call>\n", req.prefix);
    try testing.expectEqualStrings("\n</tool_call>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    const schema = try std.json.parseFromSliceLeaky(std.json.Value, a, req.schema, .{});
    const any = schema.object.get("anyOf").?.array.items;
    try testing.expectEqual(@as(usize, 2), any.len);
    try testing.expectEqualStrings("g", any[1].object.get("properties").?.object.get("name").?.object.get("const").?.string);

    const named = (try constraint(a, .llama3, &tools, .{ .function = "g" }, true)).?;
    const one = try std.json.parseFromSliceLeaky(std.json.Value, a, named.schema, .{});
    try testing.expect(one.object.get("properties").?.object.get("parameters") != null);

    const auto = (try constraint(a, .mistral, &tools, .auto, false)).?;
    try testing.expectEqualStrings("[TOOL_CALLS]", auto.triggers[0]);
    try testing.expect(std.mem.indexOf(u8, auto.schema, "\"maxItems\":1") != null);
    try testing.expect((try constraint(a, .hermes, &tools, .none, true)) == null);
}

pub const weather_tool =
    \\{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{
    \\"city":{"type":"string"},"days":{"type":"integer"},"zip":{"type":"string"},"metric":{"type":"boolean"},
    \\"where":{"type":"object"},"tags":{"type":"array","items":{"type":"string"}}}}}}
;

test "qwen xml: detected from the probe, grammar for required calls only" {
    // Qwen3.5's template, rendered with tools, shows the XML form; Qwen3's shows Hermes JSON
    try testing.expectEqual(Format.qwen_xml, detectFormat("<tools>\n{..}\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>"));
    try testing.expectEqual(Format.hermes, detectFormat("within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"));
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tool_list = [_]Tool{try toolFrom(a, weather_tool)};
    const req = (try constraint(a, .qwen_xml, &tool_list, .required, true)).?;
    try testing.expectEqualStrings("<tool_call>\n", req.prefix);
    try testing.expectEqualStrings("\n</tool_call>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    const schema = try std.json.parseFromSliceLeaky(std.json.Value, a, req.schema, .{});
    try testing.expectEqualStrings("get_weather", schema.object.get("properties").?.object.get("name").?.object.get("const").?.string);
    try testing.expect(schema.object.get("properties").?.object.get("arguments") != null);
    const named = (try constraint(a, .qwen_xml, &tool_list, .{ .function = "get_weather" }, true)).?;
    try testing.expectEqualStrings(req.schema, named.schema);
    try testing.expect((try constraint(a, .qwen_xml, &tool_list, .auto, true)) == null);
}

test "gemma 4: detected from the probe, grammar for required calls only" {
    try testing.expectEqual(Format.gemma4, detectFormat("<|turn>system\n<|tool>declaration:get_weather{description:<|\"|>The weather<|\"|>}<tool|><turn|>\n"));
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const a = arena.allocator();
    const tool_list = [_]Tool{try toolFrom(a, weather_tool)};
    const req = (try constraint(a, .gemma4, &tool_list, .required, false)).?;
    try testing.expectEqualStrings("<|tool_call>", req.prefix);
    try testing.expectEqualStrings("<tool_call|>", req.suffix);
    try testing.expectEqual(@as(usize, 0), req.triggers.len);
    try testing.expect((try constraint(a, .gemma4, &tool_list, .auto, true)) == null);
}
