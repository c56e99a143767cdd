//! The reasoning fields of a chat request: the template variables a client
//! gives a thinking model's template (`chat_template_kwargs`,
//! `reasoning_effort`), and the thinking of earlier assistant turns
//! (`reasoning_content`). The thinking in the output is split off by the
//! shared `reasoning` module.

const std = @import("std");
const Diagnostic = @import("shared").api_error.Diagnostic;
const typeError = @import("../fields.zig").typeError;

/// OpenAI's `reasoning_effort` values.
pub const efforts = [_][]const u8{ "none", "minimal", "low", "medium", "high", "xhigh", "max" };

/// The request's extra template variables, serialized as a JSON object for
/// the host's chat_template import, or null when there are none:
/// `chat_template_kwargs` (an object, e.g. `{"enable_thinking":false}`), and
/// `reasoning_effort` as the variable `reasoning_effort` (as llama.cpp gives
/// it to gpt-oss-style templates) unless the object sets that itself. A
/// template without such variables ignores them.
pub fn parseTemplateKwargs(arena: std.mem.Allocator, request: std.json.ObjectMap, diag: *Diagnostic) !?[]const u8 {
    var kwargs = switch (request.get("chat_template_kwargs") orelse .null) {
        .null => std.json.ObjectMap.init(arena),
        .object => |o| try o.clone(),
        else => |v| return typeError(diag, "chat_template_kwargs", "an object", v),
    };
    switch (request.get("reasoning_effort") orelse .null) {
        .null => {},
        .string => |effort| {
            for (efforts) |known| {
                if (std.mem.eql(u8, effort, known)) break;
            } else return diag.set(400, "reasoning_effort", null, "Invalid value for 'reasoning_effort': '{s}'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh' and 'max'.", .{effort});
            if (!kwargs.contains("reasoning_effort")) try kwargs.put("reasoning_effort", .{ .string = effort });
        },
        else => |v| return typeError(diag, "reasoning_effort", "a string", v),
    }
    if (kwargs.count() == 0) return null;
    return try std.json.stringifyAlloc(arena, std.json.Value{ .object = kwargs }, .{});
}

/// Each message's `reasoning_content` (assistant turns only; null elsewhere),
/// by index: it goes to the model's own template with its message, and the
/// template decides (thinking templates show it where they were trained to,
/// e.g. Qwen3 inside a tool-call loop; one that never mentions the field
/// renders nothing of it). Named templates leave it out. `request` has been
/// checked by request.zig's parseChatRequest: `messages` is an array of objects.
pub fn parseHistory(arena: std.mem.Allocator, request: std.json.ObjectMap, diag: *Diagnostic) ![]const ?[]const u8 {
    const items = request.get("messages").?.array.items;
    const history = try arena.alloc(?[]const u8, items.len);
    for (items, history, 0..) |item, *slot, i| {
        slot.* = null;
        const role = item.object.get("role") orelse continue;
        if (role != .string or !std.mem.eql(u8, role.string, "assistant")) continue;
        switch (item.object.get("reasoning_content") orelse .null) {
            .null => {},
            .string => |text| slot.* = text,
            else => |v| {
                var param_buf: [64]u8 = undefined;
                const param = std.fmt.bufPrint(&param_buf, "messages[{d}].reasoning_content", .{i}) catch "messages";
                return typeError(diag, param, "a string", v);
            },
        }
    }
    return history;
}

const testing = std.testing;

fn expectKwargs(body: []const u8, expected: ?[]const u8) !void {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const parsed = try std.json.parseFromSliceLeaky(std.json.Value, arena.allocator(), body, .{});
    var diag = Diagnostic{};
    const kwargs = try parseTemplateKwargs(arena.allocator(), parsed.object, &diag);
    if (expected) |e| try testing.expectEqualStrings(e, kwargs.?) else try testing.expect(kwargs == null);
}

fn expectKwargsError(body: []const u8, param: []const u8) !void {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const parsed = try std.json.parseFromSliceLeaky(std.json.Value, arena.allocator(), body, .{});
    var diag = Diagnostic{};
    try testing.expectError(error.InvalidRequest, parseTemplateKwargs(arena.allocator(), parsed.object, &diag));
    try testing.expectEqual(@as(u16, 400), diag.err.status);
    try testing.expectEqualStrings(param, diag.err.param.?);
}

test "chat_template_kwargs and reasoning_effort become template variables" {
    try expectKwargs("{}", null);
    try expectKwargs("{\"chat_template_kwargs\":null,\"reasoning_effort\":null}", null);
    try expectKwargs("{\"chat_template_kwargs\":{\"enable_thinking\":false}}", "{\"enable_thinking\":false}");
    try expectKwargs("{\"reasoning_effort\":\"low\"}", "{\"reasoning_effort\":\"low\"}");
    try expectKwargs("{\"reasoning_effort\":\"high\",\"chat_template_kwargs\":{\"enable_thinking\":true}}", "{\"enable_thinking\":true,\"reasoning_effort\":\"high\"}");
    // the client's own variable wins
    try expectKwargs("{\"reasoning_effort\":\"high\",\"chat_template_kwargs\":{\"reasoning_effort\":\"low\"}}", "{\"reasoning_effort\":\"low\"}");
}

test "bad reasoning options name their field" {
    try expectKwargsError("{\"chat_template_kwargs\":[1]}", "chat_template_kwargs");
    try expectKwargsError("{\"chat_template_kwargs\":\"x\"}", "chat_template_kwargs");
    try expectKwargsError("{\"reasoning_effort\":\"extreme\"}", "reasoning_effort");
    try expectKwargsError("{\"reasoning_effort\":2}", "reasoning_effort");
}

test "assistant turns' reasoning_content is read by message index" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    const parsed = try std.json.parseFromSliceLeaky(std.json.Value, arena.allocator(),
        \\{"messages":[{"role":"user","content":"q","reasoning_content":"not mine"},{"role":"assistant","content":"a","reasoning_content":"why"},
        \\{"role":"assistant","content":"b","reasoning_content":null},{"role":"user","content":"q2"}]}
    , .{});
    var diag = Diagnostic{};
    const history = try parseHistory(arena.allocator(), parsed.object, &diag);
    try testing.expectEqual(@as(usize, 4), history.len);
    try testing.expect(history[0] == null and history[2] == null and history[3] == null);
    try testing.expectEqualStrings("why", history[1].?);

    const bad = try std.json.parseFromSliceLeaky(std.json.Value, arena.allocator(),
        \\{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","reasoning_content":["x"]}]}
    , .{});
    try testing.expectError(error.InvalidRequest, parseHistory(arena.allocator(), bad.object, &diag));
    try testing.expectEqualStrings("messages[1].reasoning_content", diag.err.param.?);
}
