//! The host's HTTP GET (`llamaedge_http.get`, docs/tools.md): WASI preview 1
//! has no sockets, so a module fetches through the host, from the hosts its
//! policy grants only.

const std = @import("std");
const builtin = @import("builtin");

/// The host's import; off wasm (native `zig test`) a stand-in that reports "unsupported".
const host = if (builtin.target.cpu.arch.isWasm()) struct {
    extern "llamaedge_http" fn get(url_ptr: [*]const u8, url_len: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32, out_status: *u32) u32;
} else struct {
    fn get(_: [*]const u8, _: u32, _: [*]u8, _: u32, _: *u32, _: *u32) u32 {
        return unsupported;
    }
};

// The host's codes (WASI-NN's, runtime/nn/errors.py).
const invalid_argument = 1;
const unsupported = 6;
const too_large = 7;

pub const Error = error{
    /// Not an http(s) URL.
    InvalidUrl,
    /// The host is not granted (the call, and the run, then fail).
    Denied,
    /// No answer: the connection or the request failed.
    Failed,
};

pub const Response = struct {
    status: u32,
    /// The body's first bytes: a slice of the buffer given.
    body: []u8,
    /// The body was longer than the buffer.
    truncated: bool,
};

/// GET `url` into `buffer`.
pub fn get(url: []const u8, buffer: []u8) Error!Response {
    var written: u32 = 0;
    var status: u32 = 0;
    const code = host.get(url.ptr, @intCast(url.len), buffer.ptr, @intCast(buffer.len), &written, &status);
    return switch (code) {
        0, too_large => .{ .status = status, .body = buffer[0..@min(written, buffer.len)], .truncated = code == too_large },
        invalid_argument => error.InvalidUrl,
        unsupported => error.Denied,
        else => error.Failed,
    };
}

test "off wasm the host is not there" {
    var buffer: [16]u8 = undefined;
    try std.testing.expectError(error.Denied, get("http://127.0.0.1/", &buffer));
}
