//! The models the chat server serves: `GET /v1/models` and
//! `GET /v1/models/{id}`, and which model a request may name.

const std = @import("std");
const ApiError = @import("shared").api_error.ApiError;
const Settings = @import("settings.zig").Settings;

/// `{"object":"list","data":[...]}`: the chat model, and the embedding model
/// when there is one.
pub fn appendList(out: *std.ArrayList(u8), settings: Settings) !void {
    try out.appendSlice("{\"object\":\"list\",\"data\":[");
    try appendModel(out, settings);
    if (settings.embedding_model_id) |id| {
        try out.append(',');
        try appendModelNamed(out, id, settings.created, settings.embedding_capabilities, settings.embedding_ctx_size);
    }
    try out.appendSlice("]}");
}

/// The model object of `id`; false when this server does not serve it.
pub fn appendOne(out: *std.ArrayList(u8), settings: Settings, id: []const u8) !bool {
    const is_embedding = if (settings.embedding_model_id) |e| std.mem.eql(u8, id, e) else false;
    if (!std.mem.eql(u8, id, settings.model_id) and !is_embedding) return false;
    if (is_embedding) {
        try appendModelNamed(out, id, settings.created, settings.embedding_capabilities, settings.embedding_ctx_size);
    } else try appendModel(out, settings);
    return true;
}

pub fn modelNotFound(asked: []const u8, settings: Settings) ApiError {
    const static = struct {
        var buf: [512]u8 = undefined;
    };
    const message = if (settings.embedding_model_id) |embedding|
        std.fmt.bufPrint(&static.buf, "The model '{s}' does not exist. This server serves '{s}' and the embedding model '{s}'.", .{ asked, settings.model_id, embedding }) catch "The model does not exist."
    else
        std.fmt.bufPrint(&static.buf, "The model '{s}' does not exist. This server serves '{s}'.", .{ asked, settings.model_id }) catch "The model does not exist.";
    return .{ .status = 404, .message = message, .param = "model", .code = "model_not_found" };
}

/// Why `model` cannot generate text here, or null when it is the chat model (or absent).
pub fn textModelError(model: ?[]const u8, settings: Settings) ?ApiError {
    const asked = model orelse return null;
    if (std.mem.eql(u8, asked, settings.model_id)) return null;
    if (settings.embedding_model_id) |embedding| if (std.mem.eql(u8, asked, embedding)) {
        const static = struct {
            var buf: [512]u8 = undefined;
        };
        const message = std.fmt.bufPrint(&static.buf, "The model '{s}' is an embedding model: it serves /v1/embeddings only. Use '{s}' to generate text.", .{ asked, settings.model_id }) catch "This is an embedding model.";
        return .{ .status = 400, .message = message, .param = "model" };
    };
    return modelNotFound(asked, settings);
}

fn appendModel(out: *std.ArrayList(u8), settings: Settings) !void {
    try appendModelNamed(out, settings.model_id, settings.created, settings.capabilities, settings.ctx_size);
}

/// OpenAI's model object, plus what clients that look for them read (OpenAI's
/// own clients ignore them): `capabilities` and the `context_length` served.
fn appendModelNamed(out: *std.ArrayList(u8), id: []const u8, created: i64, capabilities: []const u8, context_length: u32) !void {
    const w = out.writer();
    try w.writeAll("{\"id\":");
    try std.json.encodeJsonString(id, .{}, w);
    try w.print(",\"object\":\"model\",\"created\":{d},\"owned_by\":\"llamaedge\",\"capabilities\":[", .{created});
    var names = std.mem.tokenizeScalar(u8, capabilities, ',');
    var first = true;
    while (names.next()) |name| {
        if (!first) try w.writeByte(',');
        first = false;
        try std.json.encodeJsonString(std.mem.trim(u8, name, " "), .{}, w);
    }
    try w.writeByte(']');
    if (context_length > 0) try w.print(",\"context_length\":{d}", .{context_length});
    try w.writeByte('}');
}

test "the model object" {
    var out = std.ArrayList(u8).init(std.testing.allocator);
    defer out.deinit();
    try appendModel(&out, .{ .model_id = "tiny \"q\"", .created = 17, .ctx_size = 2048, .capabilities = "chat,tools" });
    try std.testing.expectEqualStrings("{\"id\":\"tiny \\\"q\\\"\",\"object\":\"model\",\"created\":17,\"owned_by\":\"llamaedge\",\"capabilities\":[\"chat\",\"tools\"],\"context_length\":2048}", out.items);
    out.clearRetainingCapacity();
    try appendModelNamed(&out, "e", 1, "", 0);
    try std.testing.expectEqualStrings("{\"id\":\"e\",\"object\":\"model\",\"created\":1,\"owned_by\":\"llamaedge\",\"capabilities\":[]}", out.items);
}
