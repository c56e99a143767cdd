//! The host's key-value store (`llamaedge_kv` import, docs/host-interface.md):
//! get, set and delete of byte values by text key, within the app's own
//! namespace and quota. The host keeps them across requests and restarts.

const std = @import("std");
const builtin = @import("builtin");

/// The host's imports; off wasm (native `zig test`) stand-ins that report "unsupported".
const host = if (builtin.target.cpu.arch.isWasm()) struct {
    extern "llamaedge_kv" fn get(key_ptr: [*]const u8, key_len: u32, out_ptr: [*]u8, out_max_len: u32, out_written: *u32) u32;
    extern "llamaedge_kv" fn set(key_ptr: [*]const u8, key_len: u32, value_ptr: [*]const u8, value_len: u32) u32;
    extern "llamaedge_kv" fn delete(key_ptr: [*]const u8, key_len: u32) u32;
} else struct {
    fn get(_: [*]const u8, _: u32, _: [*]u8, _: u32, _: *u32) u32 {
        return unsupported;
    }
    fn set(_: [*]const u8, _: u32, _: [*]const u8, _: u32) u32 {
        return unsupported;
    }
    fn delete(_: [*]const u8, _: u32) u32 {
        return unsupported;
    }
};

// The host's codes (WASI-NN's, runtime/nn/errors.py).
const unsupported = 6;
const too_large = 7;
const not_found = 8;

pub const Error = error{
    /// The app is not granted the store.
    Denied,
    /// A set would exceed the app's quota.
    QuotaExceeded,
    NotFound,
    Failed,
} || std.mem.Allocator.Error;

fn check(code: u32) Error!void {
    return switch (code) {
        0 => {},
        unsupported => error.Denied,
        too_large => error.QuotaExceeded,
        not_found => error.NotFound,
        else => error.Failed,
    };
}

/// The value of `key`, owned by the caller; error.NotFound without one.
pub fn get(allocator: std.mem.Allocator, key: []const u8) Error![]u8 {
    var size: u32 = 4096;
    while (true) {
        const buf = try allocator.alloc(u8, size);
        var written: u32 = 0;
        const code = host.get(key.ptr, @intCast(key.len), buf.ptr, size, &written);
        if (code == too_large and written > size) {
            // The host said the value's size: try again with room for it.
            allocator.free(buf);
            size = written;
            continue;
        }
        check(code) catch |err| {
            allocator.free(buf);
            return err;
        };
        return allocator.realloc(buf, written);
    }
}

pub fn set(key: []const u8, value: []const u8) Error!void {
    return check(host.set(key.ptr, @intCast(key.len), value.ptr, @intCast(value.len)));
}

/// Deletes `key`; error.NotFound when there was none.
pub fn delete(key: []const u8) Error!void {
    return check(host.delete(key.ptr, @intCast(key.len)));
}
