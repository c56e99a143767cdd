//! Embedding vectors as JSON: read from the host's raw little-endian float32
//! output, normalized again after a truncation, and written as numbers that
//! read back as the same float32, or as base64 of the raw bytes.

const std = @import("std");

pub fn readVector(bytes: []const u8, vector: []f32) void {
    for (vector, 0..) |*x, j| x.* = @bitCast(std.mem.readInt(u32, bytes[j * 4 ..][0..4], .little));
}

/// L2 normalization after truncation (`dimensions`), as Ollama does; the host
/// normalized the whole vector already.
pub fn normalize(vector: []f32) void {
    var sum: f64 = 0;
    for (vector) |x| sum += @as(f64, x) * @as(f64, x);
    if (sum == 0) return;
    const scale = 1 / @sqrt(sum);
    for (vector) |*x| x.* = @floatCast(@as(f64, x.*) * scale);
}

pub fn appendFloats(w: anytype, vector: []const f32) !void {
    try w.writeByte('[');
    for (vector, 0..) |x, j| {
        if (j > 0) try w.writeByte(',');
        try appendFloat(w, x);
    }
    try w.writeByte(']');
}

/// The shortest decimal that reads back as exactly this float32, also when a
/// client reads it as a float64 first (as JSON parsers do) and then narrows:
/// checked here, with the float64 value's digits when the shortest would not.
pub fn appendFloat(w: anytype, x: f32) !void {
    var buf: [64]u8 = undefined;
    const magnitude = @abs(x);
    const text = if (x == 0 or (magnitude >= 1e-5 and magnitude < 1e7))
        std.fmt.bufPrint(&buf, "{d}", .{x}) catch unreachable
    else
        std.fmt.bufPrint(&buf, "{e}", .{x}) catch unreachable;
    const back: f32 = @floatCast(std.fmt.parseFloat(f64, text) catch 0);
    if (back == x) return w.writeAll(text);
    try w.print("{e}", .{@as(f64, x)});
}

/// The raw little-endian float32 bytes in base64, which the openai SDK asks for
/// by default and decodes.
pub fn appendBase64(w: anytype, vector: []const f32) !void {
    const encoder = std.base64.standard.Encoder;
    var bytes: [4 * 3]u8 = undefined; // 3 floats = 12 bytes = 16 base64 characters, no padding
    var chars: [16]u8 = undefined;
    try w.writeByte('"');
    var j: usize = 0;
    while (j < vector.len) : (j += 3) {
        const n: usize = @min(3, vector.len - j);
        for (0..n) |k| std.mem.writeInt(u32, bytes[k * 4 ..][0..4], @bitCast(vector[j + k]), .little);
        try w.writeAll(encoder.encode(&chars, bytes[0 .. n * 4]));
    }
    try w.writeByte('"');
}

const testing = std.testing;

test "floats are written so that they read back as the same float32" {
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    const xs = [_]f32{ 0.1, -0.0023064255, 1.0 / 3.0, 1e-7, 0, 1, -1, 3.4028235e38, 1.4e-45 };
    for (xs) |x| {
        out.clearRetainingCapacity();
        try appendFloat(out.writer(), x);
        const back: f32 = @floatCast(try std.fmt.parseFloat(f64, out.items));
        try testing.expectEqual(x, back);
    }
    out.clearRetainingCapacity();
    try appendFloat(out.writer(), 0.1);
    try testing.expectEqualStrings("0.1", out.items);
    // many random values
    var prng = std.Random.DefaultPrng.init(7);
    for (0..20000) |_| {
        const x: f32 = @bitCast(prng.random().int(u32));
        if (!std.math.isFinite(x)) continue;
        out.clearRetainingCapacity();
        try appendFloat(out.writer(), x);
        try testing.expectEqual(x, @as(f32, @floatCast(try std.fmt.parseFloat(f64, out.items))));
    }
}

test "base64 of float32 values matches std's encoding of the bytes" {
    const values = [_]f32{ 1, -2.5, 0.1, 7, 8 };
    var out = std.ArrayList(u8).init(testing.allocator);
    defer out.deinit();
    try appendBase64(out.writer(), &values);
    var bytes: [20]u8 = undefined;
    for (values, 0..) |x, j| std.mem.writeInt(u32, bytes[j * 4 ..][0..4], @bitCast(x), .little);
    var expected: [32]u8 = undefined;
    const text = std.base64.standard.Encoder.encode(&expected, &bytes);
    try testing.expectEqualStrings(text, out.items[1 .. out.items.len - 1]);
}
