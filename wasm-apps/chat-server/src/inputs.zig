//! The text a request gives to embed or to complete, in the four shapes
//! OpenAI accepts (a string, strings, a token array, token arrays): what
//! /v1/embeddings' `input` and /v1/completions' `prompt` share, and the batch
//! JSON the host takes (`set_input` index 3).

const std = @import("std");
const Diagnostic = @import("shared").api_error.Diagnostic;
const typeError = @import("fields.zig").typeError;

const Value = std.json.Value;

/// OpenAI's limit on the items of `input` (and what we take for `prompt`).
pub const max_inputs = 2048;

/// One text to embed or complete: text, or token ids used as they are.
pub const Input = union(enum) {
    text: []const u8,
    tokens: []const u32,
};

/// `param` as a string, a list of strings, a token array or a list of token
/// arrays. Empty strings, empty lists and more than `max_inputs` items are
/// refused: there is nothing to compute from them.
pub fn parseInputs(arena: std.mem.Allocator, value: ?Value, param: []const u8, diag: *Diagnostic) ![]Input {
    const expected = "a string, an array of strings, an array of token ids or an array of token-id arrays";
    const v = value orelse return diag.set(400, param, null, "Missing required parameter: '{s}'.", .{param});
    switch (v) {
        .string => |s| {
            if (s.len == 0) return diag.set(400, param, null, "'{s}' must not be an empty string.", .{param});
            const one = try arena.alloc(Input, 1);
            one[0] = .{ .text = s };
            return one;
        },
        .array => |list| {
            const items = list.items;
            if (items.len == 0) return diag.set(400, param, null, "'{s}' must not be an empty array.", .{param});
            if (items[0] == .integer) {
                const one = try arena.alloc(Input, 1);
                one[0] = .{ .tokens = try parseTokens(arena, items, param, diag) };
                return one;
            }
            if (items.len > max_inputs)
                return diag.set(400, param, null, "'{s}' takes at most {d} items, not {d}.", .{ param, max_inputs, items.len });
            const inputs = try arena.alloc(Input, items.len);
            var param_buf: [64]u8 = undefined;
            for (items, 0..) |item, i| {
                const at = std.fmt.bufPrint(&param_buf, "{s}[{d}]", .{ param, i }) catch param;
                inputs[i] = switch (item) {
                    .string => |s| if (s.len == 0)
                        return diag.set(400, at, null, "'{s}' must not be an empty string.", .{at})
                    else
                        .{ .text = s },
                    .array => |tokens| if (tokens.items.len == 0)
                        return diag.set(400, at, null, "'{s}' must not be an empty array.", .{at})
                    else
                        .{ .tokens = try parseTokens(arena, tokens.items, at, diag) },
                    else => return typeError(diag, at, "a string or an array of token ids", item),
                };
                // One kind per request, as OpenAI's schema has it.
                if (std.meta.activeTag(inputs[i]) != std.meta.activeTag(inputs[0]))
                    return diag.set(400, at, null, "'{s}' mixes strings and token arrays; send {s}.", .{ param, expected });
            }
            return inputs;
        },
        else => return typeError(diag, param, expected, v),
    }
}

fn parseTokens(arena: std.mem.Allocator, items: []const Value, param: []const u8, diag: *Diagnostic) ![]u32 {
    const tokens = try arena.alloc(u32, items.len);
    for (items, 0..) |item, i| {
        if (item != .integer or item.integer < 0 or item.integer > std.math.maxInt(i32))
            return diag.set(400, param, null, "Invalid token id in '{s}' at position {d}: token ids are integers from 0.", .{ param, i });
        tokens[i] = @intCast(item.integer);
    }
    return tokens;
}

/// A JSON array of the inputs, the shape of set_input index 3.
pub fn appendBatch(out: *std.ArrayList(u8), inputs: []const Input) !void {
    const w = out.writer();
    try w.writeByte('[');
    for (inputs, 0..) |input, i| {
        if (i > 0) try w.writeByte(',');
        try appendInput(w, input);
    }
    try w.writeByte(']');
}

fn appendInput(w: anytype, input: Input) !void {
    switch (input) {
        .text => |t| try std.json.encodeJsonString(t, .{}, w),
        .tokens => |tokens| {
            try w.writeByte('[');
            for (tokens, 0..) |t, j| {
                if (j > 0) try w.writeByte(',');
                try w.print("{d}", .{t});
            }
            try w.writeByte(']');
        },
    }
}
