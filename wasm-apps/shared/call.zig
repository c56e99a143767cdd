//! A mounted tool by name, or a mounted app by route (`/review`), called
//! through `llamaedge.call` (docs/tools.md): JSON in, its JSON result out. The
//! host runs it in its own sandbox, under its policy capped by the caller's;
//! cycles and deep nesting are refused.

const std = @import("std");
const builtin = @import("builtin");

/// The host's import; off wasm (native `zig test`) a stand-in: no such tool.
const host = if (builtin.target.cpu.arch.isWasm()) struct {
    extern "llamaedge" fn call(name_ptr: [*]const u8, name_len: u32, input_ptr: [*]const u8, input_len: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32) u32;
} else struct {
    fn call(_: [*]const u8, _: u32, _: [*]const u8, _: u32, _: [*]u8, _: u32, _: *u32) u32 {
        return not_found;
    }
};

// The host's codes (WASI-NN's, runtime/nn/errors.py).
const runtime_error = 5;
const too_large = 7;
const not_found = 8;

/// A tool's result is at most this long (the host's TOOL_OUTPUT_MAX_BYTES), and
/// an error result a little more: a buffer this size always holds it.
pub const result_max_bytes = 1024 * 1024 + 64 * 1024;

pub const Error = error{
    /// No tool of that name (or app at that route) is mounted.
    NoSuchTool,
    Failed,
} || std.mem.Allocator.Error;

pub const Result = struct {
    /// The tool's JSON result, or `{"error", "code"}` when it failed (or was refused).
    json: []u8,
    ok: bool,
};

/// Call the tool (or app) `name` with `input` (a JSON object). The caller owns `json`.
pub fn callTool(allocator: std.mem.Allocator, name: []const u8, input: []const u8) Error!Result {
    const buffer = try allocator.alloc(u8, result_max_bytes);
    errdefer allocator.free(buffer);
    var written: u32 = 0;
    const code = host.call(name.ptr, @intCast(name.len), input.ptr, @intCast(input.len), buffer.ptr, @intCast(buffer.len), &written);
    switch (code) {
        0, runtime_error => {},
        not_found => return error.NoSuchTool,
        else => return error.Failed,
    }
    if (written > buffer.len) return error.Failed;
    return .{ .json = try allocator.realloc(buffer, written), .ok = code == 0 };
}

/// `callTool`, for code that takes its caller as `anytype` (a fake in tests).
pub const Caller = struct {
    pub fn call(_: Caller, allocator: std.mem.Allocator, name: []const u8, input: []const u8) Error!Result {
        return callTool(allocator, name, input);
    }
};

test "off wasm no tool is mounted" {
    try std.testing.expectError(error.NoSuchTool, callTool(std.testing.allocator, "files", "{}"));
}
