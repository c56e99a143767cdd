//! What every app's `main` sets up the same way: the allocator for the
//! target, and a log that writes each line at once.

const std = @import("std");
const builtin = @import("builtin");

/// wasm's own allocator in the app; the page allocator when the tests run natively.
pub const allocator = if (builtin.target.cpu.arch.isWasm()) std.heap.wasm_allocator else std.heap.page_allocator;

/// One write per line, so that the host's line-by-line log never interleaves
/// (and log lines never interleave with other output).
pub fn logLine(comptime level: std.log.Level, comptime scope: @TypeOf(.enum_literal), comptime fmt: []const u8, args: anytype) void {
    var buf: [2048]u8 = undefined;
    const prefix = comptime level.asText() ++ "(" ++ @tagName(scope) ++ "): ";
    const line = std.fmt.bufPrint(&buf, prefix ++ fmt ++ "\n", args) catch blk: {
        buf[buf.len - 1] = '\n';
        break :blk buf[0..];
    };
    std.io.getStdErr().writeAll(line) catch {};
}
