//! An error as an app answers it: the HTTP status and OpenAI's error object
//! `{"error":{message,type,param,code}}` (the chat server's Anthropic routes
//! write the same `ApiError` in Anthropic's shape). `Diagnostic` is where a
//! request parser or a generation describes what went wrong, without the
//! allocator.

const std = @import("std");

pub const ApiError = struct {
    status: u16,
    message: []const u8,
    kind: []const u8 = "invalid_request_error",
    param: ?[]const u8 = null,
    code: ?[]const u8 = null,
};

/// Where a parse failure is described. The text lives in fixed buffers so
/// that reporting an error never needs the allocator.
pub const Diagnostic = struct {
    err: ApiError = .{ .status = 400, .message = "" },
    message_buf: [768]u8 = undefined,
    param_buf: [96]u8 = undefined,

    pub fn set(self: *Diagnostic, status: u16, param: ?[]const u8, code: ?[]const u8, comptime fmt: []const u8, args: anytype) error{InvalidRequest} {
        const message = std.fmt.bufPrint(&self.message_buf, fmt, args) catch blk: {
            const ellipsis = "...";
            @memcpy(self.message_buf[self.message_buf.len - ellipsis.len ..], ellipsis);
            break :blk self.message_buf[0..];
        };
        var param_copy: ?[]const u8 = null;
        if (param) |p| {
            const len = @min(p.len, self.param_buf.len);
            @memcpy(self.param_buf[0..len], p[0..len]);
            param_copy = self.param_buf[0..len];
        }
        self.err = .{ .status = status, .message = message, .param = param_copy, .code = code };
        return error.InvalidRequest;
    }

    /// A 500 of type `server_error`: the server failed, not the request.
    pub fn setServerError(self: *Diagnostic, comptime fmt: []const u8, args: anytype) error{InvalidRequest} {
        const err = self.set(500, null, null, fmt, args);
        self.err.kind = "server_error";
        return err;
    }
};

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}`.
pub fn appendError(out: *std.ArrayList(u8), err: ApiError) !void {
    const w = out.writer();
    try w.writeAll("{\"error\":{\"message\":");
    try std.json.encodeJsonString(err.message, .{}, w);
    try w.writeAll(",\"type\":");
    try std.json.encodeJsonString(err.kind, .{}, w);
    try w.writeAll(",\"param\":");
    if (err.param) |p| try std.json.encodeJsonString(p, .{}, w) else try w.writeAll("null");
    try w.writeAll(",\"code\":");
    if (err.code) |c| try std.json.encodeJsonString(c, .{}, w) else try w.writeAll("null");
    try w.writeAll("}}");
}

test "errors have message, type, param and code" {
    var out = std.ArrayList(u8).init(std.testing.allocator);
    defer out.deinit();
    try appendError(&out, .{ .status = 404, .message = "no \"x\"", .param = "model", .code = "model_not_found" });
    try std.testing.expectEqualStrings(
        \\{"error":{"message":"no \"x\"","type":"invalid_request_error","param":"model","code":"model_not_found"}}
    , out.items);
}
