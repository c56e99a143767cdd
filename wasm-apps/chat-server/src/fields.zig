//! Reading a JSON request body's fields, each refused with a 400 that names
//! the field and what it should be (OpenAI's wording). What every route's
//! parser shares.

const std = @import("std");
const Diagnostic = @import("shared").api_error.Diagnostic;

const Value = std.json.Value;

/// The request body as a JSON object, in `arena`; malformed JSON is a 400.
pub fn parseObject(arena: std.mem.Allocator, body: []const u8, diag: *Diagnostic) !std.json.ObjectMap {
    const root = std.json.parseFromSliceLeaky(Value, arena, body, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return diag.set(400, null, null, "We could not parse the JSON body of your request ({s}). The body must be a JSON object.", .{switch (err) {
            error.DuplicateField => "a field appears twice",
            error.ValueTooLong => "a value is too long",
            else => "it is not valid JSON",
        }}),
    };
    if (root != .object) return diag.set(400, null, null, "The request body must be a JSON object, not {s}.", .{typeName(root)});
    return root.object;
}

pub fn optString(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?[]const u8 {
    return optStringAt(obj, key, key, diag);
}

/// `optString` of a field inside the body, named `param` in the error.
pub fn optStringAt(obj: std.json.ObjectMap, key: []const u8, param: []const u8, diag: *Diagnostic) !?[]const u8 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .string => |s| s,
        else => typeError(diag, param, "a string", v),
    };
}

pub fn optBool(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?bool {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .bool => |b| b,
        else => typeError(diag, key, "a boolean", v),
    };
}

pub fn optInteger(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?i64 {
    const v = obj.get(key) orelse return null;
    return switch (v) {
        .null => null,
        .integer => |i| i,
        .float => |f| if (@floor(f) == f and @abs(f) < 9.0e15) @as(i64, @intFromFloat(f)) else typeError(diag, key, "an integer", v),
        else => typeError(diag, key, "an integer", v),
    };
}

/// A token count: an integer of at least 1.
pub fn optCount(obj: std.json.ObjectMap, key: []const u8, diag: *Diagnostic) !?u32 {
    const n = (try optInteger(obj, key, diag)) orelse return null;
    if (n < 1) return diag.set(400, key, null, "Invalid '{s}': {d}. It must be at least 1.", .{ key, n });
    return @intCast(@min(n, std.math.maxInt(u32)));
}

pub fn optNumberIn(obj: std.json.ObjectMap, key: []const u8, min: f64, max: f64, diag: *Diagnostic) !?f64 {
    const v = obj.get(key) orelse return null;
    const x: f64 = switch (v) {
        .null => return null,
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        else => return typeError(diag, key, "a number", v),
    };
    if (!(x >= min and x <= max))
        return diag.set(400, key, null, "Invalid '{s}': {d}. It must be between {d} and {d}.", .{ key, x, min, max });
    return x;
}

pub fn typeError(diag: *Diagnostic, param: []const u8, expected: []const u8, got: Value) error{InvalidRequest} {
    return diag.set(400, param, null, "Invalid type for '{s}': expected {s}, but got {s}.", .{ param, expected, typeName(got) });
}

pub fn typeName(v: Value) []const u8 {
    return switch (v) {
        .null => "null",
        .bool => "a boolean",
        .integer, .float, .number_string => "a number",
        .string => "a string",
        .array => "an array",
        .object => "an object",
    };
}
