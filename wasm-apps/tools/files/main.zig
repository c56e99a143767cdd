//! files, a tool (docs/tools.md): `{"op": "list"|"read"|"search", "path": ".",
//! "pattern": "..."}` in; the entries, the text or the matching lines out.

const std = @import("std");
const shared = @import("shared");
const files = @import("files.zig");

const tool = shared.tool;

pub const std_options: std.Options = .{ .log_level = .info, .logFn = shared.app.logLine };

const Input = struct {
    op: []const u8,
    path: []const u8 = ".",
    pattern: []const u8 = "",
};

pub fn main() u8 {
    var arena_state = std.heap.ArenaAllocator.init(shared.app.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const input = tool.readInput(Input, arena) catch return tool.fail(arena, "the input must be {\"op\": \"list\", \"path\": \"...\"}");
    const op = input.value.op;
    const path = input.value.path;
    // The granted directory: the first one preopened (WASI's current directory).
    const root = std.fs.cwd();
    if (std.mem.eql(u8, op, "list")) {
        const entries = files.list(arena, root, path) catch |err| return failPath(arena, path, err);
        return tool.succeed(arena, .{ .path = path, .entries = entries });
    }
    if (std.mem.eql(u8, op, "read")) {
        const text = files.read(arena, root, path) catch |err| return failPath(arena, path, err);
        return tool.succeed(arena, .{ .path = path, .content = text.content, .truncated = text.truncated });
    }
    if (std.mem.eql(u8, op, "search")) {
        if (input.value.pattern.len == 0) return tool.fail(arena, "search needs a pattern");
        const matches = files.search(arena, root, path, input.value.pattern) catch |err| return failPath(arena, path, err);
        return tool.succeed(arena, .{ .pattern = input.value.pattern, .matches = matches });
    }
    return tool.failFmt(arena, "unknown op {s}: use list, read or search", .{op});
}

fn failPath(arena: std.mem.Allocator, path: []const u8, err: anyerror) u8 {
    return switch (err) {
        error.NotText => tool.failFmt(arena, "{s} is not a UTF-8 text file", .{path}),
        error.FileNotFound => tool.failFmt(arena, "{s}: no such file or directory", .{path}),
        else => tool.failFmt(arena, "{s}: {s}", .{ path, @errorName(err) }),
    };
}

test {
    _ = @import("files.zig");
}
