//! Stored responses (`store`, true by default), in the host's key-value
//! store (shared `kv`, the app's own namespace): `response/{id}`, the
//! response object, and `input/{id}`, the items of its conversation (the
//! previous response's, then its own input). `previous_response_id`
//! continues from both; GET /v1/responses/{id}, GET .../input_items and
//! DELETE read and remove them.

const std = @import("std");
const shared = @import("shared");

const kv = shared.kv;
const ApiError = shared.api_error.ApiError;
const Value = std.json.Value;

const log = std.log.scoped(.responses);

fn key(buf: []u8, comptime kind: []const u8, id: []const u8) []const u8 {
    return std.fmt.bufPrint(buf, kind ++ "/{s}", .{id}) catch kind;
}

/// The longest id a key is made of; longer ones are not this server's.
const max_id_len = 200;

/// The stored conversation of a response, for `previous_response_id`.
pub const History = struct {
    /// Its items: its conversation's input, then its output; null when it is not stored.
    pub fn load(_: History, arena: std.mem.Allocator, id: []const u8) !?[]const Value {
        const input = (try read(arena, "input", id)) orelse return null;
        const response = (try read(arena, "response", id)) orelse return null;
        const output = if (response == .object) response.object.get("output") orelse Value.null else Value.null;
        if (input != .array or output != .array) return null;
        var items = std.ArrayList(Value).init(arena);
        try items.appendSlice(input.array.items);
        try items.appendSlice(output.array.items);
        return items.items;
    }
};

/// A stored value parsed, or null without one (or when the store is denied or fails: logged).
fn read(arena: std.mem.Allocator, comptime kind: []const u8, id: []const u8) !?Value {
    const text = (try readText(arena, kind, id)) orelse return null;
    return std.json.parseFromSliceLeaky(Value, arena, text, .{}) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => {
            log.err("stored {s}/{s} is not JSON", .{ kind, id });
            return null;
        },
    };
}

fn readText(allocator: std.mem.Allocator, comptime kind: []const u8, id: []const u8) !?[]u8 {
    if (id.len > max_id_len) return null;
    var buf: [max_id_len + 16]u8 = undefined;
    return kv.get(allocator, key(&buf, kind, id)) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        error.NotFound => return null,
        else => {
            log.err("cannot read {s}/{s} from the key-value store: {s}", .{ kind, id, @errorName(err) });
            return null;
        },
    };
}

/// Keeps a finished response and its conversation's items; the items get ids
/// where they had none (`{kind}_{response's random part}_{index}`) so that
/// input_items can list them. A failure (quota, no grant) is logged: the
/// client already has its response.
pub fn save(arena: std.mem.Allocator, id: []const u8, response: []const u8, items: []const Value) !void {
    const random = if (std.mem.indexOfScalar(u8, id, '_')) |i| id[i + 1 ..] else id;
    const with_ids = try arena.dupe(Value, items);
    for (with_ids, 0..) |*item, i| {
        if (item.* != .object or item.object.contains("id")) continue;
        const t = item.object.get("type") orelse Value{ .string = "message" };
        const prefix = if (t == .string and std.mem.eql(u8, t.string, "function_call_output")) "fco" else "msg";
        // A new map in `arena`: the parsed maps hold the allocator of the request
        // as parseRequest made it, which is not to be used after it returned.
        var copy = std.json.ObjectMap.init(arena);
        var it = item.object.iterator();
        while (it.next()) |entry| try copy.put(entry.key_ptr.*, entry.value_ptr.*);
        try copy.put("id", .{ .string = try std.fmt.allocPrint(arena, "{s}_{s}_{d}", .{ prefix, random, i }) });
        if (!copy.contains("type")) try copy.put("type", .{ .string = "message" });
        item.* = .{ .object = copy };
    }
    const input = try std.json.stringifyAlloc(arena, with_ids, .{});
    var buf: [max_id_len + 16]u8 = undefined;
    inline for (.{ .{ "input", input }, .{ "response", response } }) |entry| {
        kv.set(key(&buf, entry[0], id), entry[1]) catch |err| {
            if (err == error.OutOfMemory) return error.OutOfMemory;
            log.err("{s}: not stored ({s}): the key-value store refused {s}/{s}", .{ id, @errorName(err), entry[0], id });
            return;
        };
    }
}

pub fn notFound(buf: []u8, id: []const u8) ApiError {
    const message = std.fmt.bufPrint(buf, "Response with id '{s}' not found. Only responses created with 'store' true (the default) are kept.", .{id[0..@min(id.len, max_id_len)]}) catch "Response not found.";
    return .{ .status = 404, .message = message, .code = "not_found" };
}

/// GET /v1/responses/{id}: the stored response object.
pub fn appendResponse(allocator: std.mem.Allocator, out: *std.ArrayList(u8), id: []const u8) !bool {
    const text = (try readText(allocator, "response", id)) orelse return false;
    defer allocator.free(text);
    try out.appendSlice(text);
    return true;
}

/// GET /v1/responses/{id}/input_items: its conversation's input, as a list (all of it, oldest first).
pub fn appendInputItems(arena: std.mem.Allocator, out: *std.ArrayList(u8), id: []const u8) !bool {
    const items = (try read(arena, "input", id)) orelse return false;
    if (items != .array) return false;
    const w = out.writer();
    try w.writeAll("{\"object\":\"list\",\"data\":");
    try std.json.stringify(items, .{}, w);
    const list = items.array.items;
    const first = if (list.len > 0 and list[0] == .object) list[0].object.get("id") orelse Value.null else Value.null;
    const last = if (list.len > 0 and list[list.len - 1] == .object) list[list.len - 1].object.get("id") orelse Value.null else Value.null;
    try w.writeAll(",\"first_id\":");
    try std.json.stringify(first, .{}, w);
    try w.writeAll(",\"last_id\":");
    try std.json.stringify(last, .{}, w);
    try w.writeAll(",\"has_more\":false}");
    return true;
}

/// DELETE /v1/responses/{id}: false when it was not stored.
pub fn delete(id: []const u8) bool {
    if (id.len > max_id_len) return false;
    var buf: [max_id_len + 16]u8 = undefined;
    kv.delete(key(&buf, "input", id)) catch {};
    kv.delete(key(&buf, "response", id)) catch |err| {
        if (err != error.NotFound) log.err("cannot delete {s}: {s}", .{ id, @errorName(err) });
        return false;
    };
    return true;
}
