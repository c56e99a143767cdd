//! WAGI, the CGI convention for WebAssembly: the request arrives in
//! environment variables and stdin, the response leaves on stdout as header
//! lines, a blank line, then the body. What every HTTP app does the same way:
//! read the body under the host's limit, and write a response or an error in
//! one write.

const std = @import("std");
const api_error = @import("api_error.zig");

pub const BodyError = error{ TooLarge, BadLength };

/// The request body, refused (413) from CONTENT_LENGTH alone when it is over
/// the limit, and refused again if more bytes than the limit arrive.
pub fn readBody(allocator: std.mem.Allocator, reader: anytype, content_length: ?[]const u8, max_bytes: u64) ![]u8 {
    if (content_length) |text| if (text.len > 0) {
        const declared = std.fmt.parseInt(u64, std.mem.trim(u8, text, " "), 10) catch return error.BadLength;
        if (declared > max_bytes) return error.TooLarge;
    };
    return reader.readAllAlloc(allocator, @intCast(max_bytes)) catch |err| switch (err) {
        error.StreamTooLong => error.TooLarge,
        else => |e| e,
    };
}

pub fn statusText(status: u16) []const u8 {
    return switch (status) {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        else => "Error",
    };
}

/// Status line, headers and a JSON body, in one write.
pub fn writeJson(allocator: std.mem.Allocator, out: anytype, status: u16, extra_headers: []const u8, body: []const u8) !void {
    var response = std.ArrayList(u8).init(allocator);
    defer response.deinit();
    try response.writer().print("Status: {d} {s}\nContent-Type: application/json\n{s}\n", .{ status, statusText(status), extra_headers });
    try response.appendSlice(body);
    try out.writeAll(response.items);
}

pub fn writeError(allocator: std.mem.Allocator, out: anytype, err: api_error.ApiError, extra_headers: []const u8) !void {
    var body = std.ArrayList(u8).init(allocator);
    defer body.deinit();
    try api_error.appendError(&body, err);
    try writeJson(allocator, out, err.status, extra_headers, body.items);
}

const testing = std.testing;

test "a body over the limit is refused from its declared length" {
    var stream = std.io.fixedBufferStream("0123456789");
    try testing.expectError(error.TooLarge, readBody(testing.allocator, stream.reader(), "11", 10));
    try testing.expectError(error.BadLength, readBody(testing.allocator, stream.reader(), "ten", 10));
    const body = try readBody(testing.allocator, stream.reader(), "10", 10);
    defer testing.allocator.free(body);
    try testing.expectEqualStrings("0123456789", body);
    // a host that sends more than it declared is caught too
    var more = std.io.fixedBufferStream("0123456789ABC");
    try testing.expectError(error.TooLarge, readBody(testing.allocator, more.reader(), null, 10));
}

test "an error response is a status line, JSON type, and the error body" {
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try writeError(testing.allocator, out.writer(), .{ .status = 405, .message = "m" }, "Allow: POST\n");
    try testing.expectEqualStrings("Status: 405 Method Not Allowed\nContent-Type: application/json\nAllow: POST\n\n" ++
        "{\"error\":{\"message\":\"m\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}", out.items);
}
