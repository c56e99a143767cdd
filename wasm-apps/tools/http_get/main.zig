//! http_get, a tool (docs/tools.md): `{"url": "http://..."}` in; the status and
//! the body (text) out. It fetches through the host's `llamaedge_http.get`:
//! only from the hosts its policy grants, redirects not followed.

const std = @import("std");
const shared = @import("shared");

const tool = shared.tool;
const fetch = shared.fetch;

pub const std_options: std.Options = .{ .log_level = .info, .logFn = shared.app.logLine };

/// The most body bytes returned: the rest is cut (`truncated`).
const body_max_bytes = 256 * 1024;

const Input = struct { url: []const u8 };

pub fn main() u8 {
    var arena_state = std.heap.ArenaAllocator.init(shared.app.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const input = tool.readInput(Input, arena) catch return tool.fail(arena, "the input must be {\"url\": \"http://...\"}");
    const buffer = arena.alloc(u8, body_max_bytes) catch return tool.fail(arena, "out of memory");
    const response = fetch.get(input.value.url, buffer) catch |err| return switch (err) {
        error.InvalidUrl => tool.failFmt(arena, "not an http(s) URL: {s}", .{input.value.url}),
        error.Denied => tool.failFmt(arena, "this tool may not fetch {s}: its host is not granted", .{input.value.url}),
        error.Failed => tool.failFmt(arena, "fetching {s} failed", .{input.value.url}),
    };
    const body = text(response.body, response.truncated) orelse return tool.failFmt(arena, "the body of {s} is not UTF-8 text", .{input.value.url});
    return tool.succeed(arena, .{ .status = response.status, .body = body, .truncated = response.truncated });
}

/// `body` as text: null unless UTF-8. A body cut short may end inside a
/// character: that character's first bytes are dropped.
fn text(body: []const u8, truncated: bool) ?[]const u8 {
    var end = body.len;
    while (truncated and end > 0 and end + 4 > body.len and !std.unicode.utf8ValidateSlice(body[0..end])) end -= 1;
    return if (std.unicode.utf8ValidateSlice(body[0..end])) body[0..end] else null;
}

test "a body is text when UTF-8; a cut character is dropped only when cut" {
    try std.testing.expectEqualStrings("caf\xc3\xa9", text("caf\xc3\xa9", false).?);
    try std.testing.expectEqualStrings("caf", text("caf\xc3", true).?);
    try std.testing.expect(text("caf\xc3", false) == null);
    try std.testing.expect(text("\xff\xfeabc", true) == null);
}
