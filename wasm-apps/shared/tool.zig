//! A tool's side of the contract (docs/tools.md): its arguments, one JSON
//! object, on stdin; its result, one JSON value, on stdout and exit code 0; or
//! `{"error": "..."}` on stdout and exit code 1. Any language that targets
//! WASI can keep it; this is it for Zig.

const std = @import("std");

/// The most argument bytes a tool reads (the host's request body limit).
pub const input_max_bytes = 8 * 1024 * 1024;

/// The arguments as `T`, owned by the caller (`deinit`). The host has checked
/// them against the manifest's schema; fields `T` does not name are ignored.
pub fn parseInput(comptime T: type, allocator: std.mem.Allocator, text: []const u8) !std.json.Parsed(T) {
    return std.json.parseFromSlice(T, allocator, text, .{ .ignore_unknown_fields = true, .allocate = .alloc_always });
}

/// `parseInput` of what is on stdin.
pub fn readInput(comptime T: type, allocator: std.mem.Allocator) !std.json.Parsed(T) {
    const text = try std.io.getStdIn().readToEndAlloc(allocator, input_max_bytes);
    defer allocator.free(text);
    return parseInput(T, allocator, text);
}

/// `value` as JSON, in one write (the host collects stdout whole).
pub fn writeJson(allocator: std.mem.Allocator, writer: anytype, value: anytype) !void {
    const text = try std.json.stringifyAlloc(allocator, value, .{});
    defer allocator.free(text);
    try writer.writeAll(text);
}

/// Write the result to stdout; returns main's exit code.
pub fn succeed(allocator: std.mem.Allocator, value: anytype) u8 {
    writeJson(allocator, std.io.getStdOut().writer(), value) catch return 1;
    return 0;
}

/// Write `{"error": message}` to stdout; returns main's exit code.
pub fn fail(allocator: std.mem.Allocator, message: []const u8) u8 {
    writeJson(allocator, std.io.getStdOut().writer(), .{ .@"error" = message }) catch {};
    return 1;
}

/// `fail` with a formatted message.
pub fn failFmt(allocator: std.mem.Allocator, comptime fmt: []const u8, args: anytype) u8 {
    const message = std.fmt.allocPrint(allocator, fmt, args) catch return fail(allocator, "out of memory");
    defer allocator.free(message);
    return fail(allocator, message);
}

test "parseInput ignores unknown fields and the result is one JSON value" {
    const allocator = std.testing.allocator;
    const parsed = try parseInput(struct { expression: []const u8 }, allocator, "{\"expression\":\"1+2\",\"x\":1}");
    defer parsed.deinit();
    try std.testing.expectEqualStrings("1+2", parsed.value.expression);

    var out = std.ArrayList(u8).init(allocator);
    defer out.deinit();
    try writeJson(allocator, out.writer(), .{ .@"error" = "bad \"x\"" });
    try std.testing.expectEqualStrings("{\"error\":\"bad \\\"x\\\"\"}", out.items);
}
