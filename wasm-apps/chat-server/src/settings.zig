//! The chat server's settings, which the host passes as LLAMAEDGE_*
//! variables (docs/host-interface.md), and its route table.

const std = @import("std");
const defaults = @import("shared").defaults;

/// What the host says of the models it serves. A value the host does not
/// pass is the shared default for such hosts (defaults.zig).
pub const Settings = struct {
    model_id: []const u8 = defaults.graph,
    graph: []const u8 = defaults.graph,
    created: i64 = 0,
    template: []const u8 = "auto",
    ctx_size: u32 = defaults.ctx_size,
    max_body_bytes: u64 = defaults.max_body_bytes,
    /// The limits of an image in a request (images.zig).
    image_bytes_max: u64 = defaults.image_bytes_max,
    image_pixels_max: u64 = defaults.image_pixels_max,
    /// The host's decoding slots (`serve --parallel`), which bound the choices
    /// of a completion that generate at once.
    parallel: u32 = defaults.parallel,
    /// A separate embedding model (`serve --embedding-model`); without one the
    /// chat model embeds. The graph is set whenever the id is.
    embedding_model_id: ?[]const u8 = null,
    embedding_graph: ?[]const u8 = null,
    /// What each model can do, as /v1/models reports it: comma-separated
    /// names (chat, tools, thinking, vision, code, embedding), from the host.
    capabilities: []const u8 = "",
    embedding_capabilities: []const u8 = "",
    /// The embedding model's context; 0 when the host does not say.
    embedding_ctx_size: u32 = 0,
};

/// Reads the LLAMAEDGE_* variables; a value that is present but unusable is
/// a host misconfiguration, reported by name.
pub fn settingsFromEnv(env: *const std.process.EnvMap, bad_var: *[]const u8) error{BadSetting}!Settings {
    var s = Settings{};
    if (env.get("LLAMAEDGE_MODEL_ID")) |v| s.model_id = v;
    if (env.get("LLAMAEDGE_MODEL_GRAPH")) |v| s.graph = v;
    if (env.get("LLAMAEDGE_PROMPT_TEMPLATE")) |v| s.template = v;
    if (env.get("LLAMAEDGE_EMBEDDING_MODEL_ID")) |id| {
        s.embedding_model_id = id;
        // WasmEdge's convention names the second model's graph `embedding`.
        s.embedding_graph = env.get("LLAMAEDGE_EMBEDDING_GRAPH") orelse "embedding";
    }
    if (env.get("LLAMAEDGE_MODEL_CAPABILITIES")) |v| s.capabilities = v;
    if (env.get("LLAMAEDGE_EMBEDDING_MODEL_CAPABILITIES")) |v| s.embedding_capabilities = v;
    s.embedding_ctx_size = try intVar(u32, env, "LLAMAEDGE_EMBEDDING_CTX_SIZE", s.embedding_ctx_size, bad_var);
    s.created = try intVar(i64, env, "LLAMAEDGE_MODEL_CREATED", s.created, bad_var);
    s.ctx_size = try intVar(u32, env, "LLAMAEDGE_CTX_SIZE", s.ctx_size, bad_var);
    s.max_body_bytes = try intVar(u64, env, "LLAMAEDGE_MAX_BODY_BYTES", s.max_body_bytes, bad_var);
    s.image_bytes_max = try intVar(u64, env, "LLAMAEDGE_IMAGE_BYTES_MAX", s.image_bytes_max, bad_var);
    s.image_pixels_max = try intVar(u64, env, "LLAMAEDGE_IMAGE_PIXELS_MAX", s.image_pixels_max, bad_var);
    s.parallel = @max(1, try intVar(u32, env, "LLAMAEDGE_PARALLEL", s.parallel, bad_var));
    if (s.ctx_size == 0) {
        bad_var.* = "LLAMAEDGE_CTX_SIZE";
        return error.BadSetting;
    }
    return s;
}

fn intVar(comptime T: type, env: *const std.process.EnvMap, name: []const u8, default: T, bad_var: *[]const u8) error{BadSetting}!T {
    const text = env.get(name) orelse return default;
    return std.fmt.parseInt(T, std.mem.trim(u8, text, " "), 10) catch {
        bad_var.* = name;
        return error.BadSetting;
    };
}

pub const Route = union(enum) {
    models,
    model: []const u8,
    chat_completions,
    /// Anthropic's Messages API.
    messages,
    /// Anthropic's token count of a Messages request.
    count_tokens,
    completions,
    embeddings,
    /// OpenAI's Responses API.
    responses,
    /// A stored response: GET, DELETE, or GET its input items.
    stored_response: StoredResponse,
    rerank,
    not_found,
    /// The path exists; the method does not. Carries the `Allow` value.
    method_not_allowed: []const u8,
};

pub const StoredResponse = struct {
    id: []const u8,
    action: enum { get, delete, input_items },
};

pub fn route(method: []const u8, path_info: []const u8) Route {
    // Clients differ on a trailing slash; the routes mean the same without it.
    const path = if (path_info.len > 1 and path_info[path_info.len - 1] == '/') path_info[0 .. path_info.len - 1] else path_info;
    const is_get = std.mem.eql(u8, method, "GET") or std.mem.eql(u8, method, "HEAD");
    if (std.mem.eql(u8, path, "/v1/models")) return if (is_get) .models else .{ .method_not_allowed = "GET" };
    const model_prefix = "/v1/models/";
    if (std.mem.startsWith(u8, path, model_prefix) and path.len > model_prefix.len)
        return if (is_get) .{ .model = path[model_prefix.len..] } else .{ .method_not_allowed = "GET" };
    if (std.mem.eql(u8, path, "/v1/chat/completions"))
        return if (std.mem.eql(u8, method, "POST")) .chat_completions else .{ .method_not_allowed = "POST" };
    if (std.mem.eql(u8, path, "/v1/messages"))
        return if (std.mem.eql(u8, method, "POST")) .messages else .{ .method_not_allowed = "POST" };
    if (std.mem.eql(u8, path, "/v1/messages/count_tokens"))
        return if (std.mem.eql(u8, method, "POST")) .count_tokens else .{ .method_not_allowed = "POST" };
    if (std.mem.eql(u8, path, "/v1/completions"))
        return if (std.mem.eql(u8, method, "POST")) .completions else .{ .method_not_allowed = "POST" };
    if (std.mem.eql(u8, path, "/v1/responses"))
        return if (std.mem.eql(u8, method, "POST")) .responses else .{ .method_not_allowed = "POST" };
    const responses_prefix = "/v1/responses/";
    if (std.mem.startsWith(u8, path, responses_prefix) and path.len > responses_prefix.len) {
        const rest = path[responses_prefix.len..];
        if (std.mem.endsWith(u8, rest, "/input_items") and rest.len > "/input_items".len)
            return if (is_get) .{ .stored_response = .{ .id = rest[0 .. rest.len - "/input_items".len], .action = .input_items } } else .{ .method_not_allowed = "GET" };
        if (std.mem.indexOfScalar(u8, rest, '/') != null) return .not_found;
        if (is_get) return .{ .stored_response = .{ .id = rest, .action = .get } };
        if (std.mem.eql(u8, method, "DELETE")) return .{ .stored_response = .{ .id = rest, .action = .delete } };
        return .{ .method_not_allowed = "GET, DELETE" };
    }
    if (std.mem.eql(u8, path, "/v1/embeddings"))
        return if (std.mem.eql(u8, method, "POST")) .embeddings else .{ .method_not_allowed = "POST" };
    if (std.mem.eql(u8, path, "/v1/rerank"))
        return if (std.mem.eql(u8, method, "POST")) .rerank else .{ .method_not_allowed = "POST" };
    return .not_found;
}

const testing = std.testing;

test "routes" {
    try testing.expectEqual(Route.models, route("GET", "/v1/models"));
    try testing.expectEqual(Route.models, route("GET", "/v1/models/"));
    try testing.expectEqualStrings("tiny-chat", route("GET", "/v1/models/tiny-chat").model);
    try testing.expectEqualStrings("org/name", route("GET", "/v1/models/org/name").model);
    try testing.expectEqual(Route.chat_completions, route("POST", "/v1/chat/completions"));
    try testing.expectEqual(Route.messages, route("POST", "/v1/messages"));
    try testing.expectEqualStrings("POST", route("GET", "/v1/chat/completions").method_not_allowed);
    try testing.expectEqualStrings("GET", route("DELETE", "/v1/models").method_not_allowed);
    try testing.expectEqual(Route.not_found, route("GET", "/v1/nothing"));
    try testing.expectEqual(Route.completions, route("POST", "/v1/completions"));
    try testing.expectEqual(Route.embeddings, route("POST", "/v1/embeddings/"));
    try testing.expectEqualStrings("POST", route("GET", "/v1/completions").method_not_allowed);
    try testing.expectEqualStrings("POST", route("PUT", "/v1/embeddings").method_not_allowed);
    try testing.expectEqual(Route.not_found, route("POST", "/v1/edits"));
    try testing.expectEqual(Route.responses, route("POST", "/v1/responses"));
    try testing.expectEqualStrings("resp_1", route("GET", "/v1/responses/resp_1").stored_response.id);
    try testing.expect(route("DELETE", "/v1/responses/resp_1").stored_response.action == .delete);
    try testing.expect(route("GET", "/v1/responses/resp_1/input_items").stored_response.action == .input_items);
    try testing.expectEqualStrings("GET, DELETE", route("POST", "/v1/responses/resp_1").method_not_allowed);
    try testing.expectEqual(Route.rerank, route("POST", "/v1/rerank"));
}

test "settings come from the environment and bad values are named" {
    var env = std.process.EnvMap.init(testing.allocator);
    defer env.deinit();
    try env.put("LLAMAEDGE_MODEL_ID", "tiny");
    try env.put("LLAMAEDGE_CTX_SIZE", "2048");
    var bad: []const u8 = "";
    const s = try settingsFromEnv(&env, &bad);
    try testing.expectEqualStrings("tiny", s.model_id);
    try testing.expectEqual(@as(u32, 2048), s.ctx_size);
    try testing.expectEqual(defaults.parallel, s.parallel);
    try env.put("LLAMAEDGE_MAX_BODY_BYTES", "lots");
    try testing.expectError(error.BadSetting, settingsFromEnv(&env, &bad));
    try testing.expectEqualStrings("LLAMAEDGE_MAX_BODY_BYTES", bad);
    try testing.expect(s.embedding_model_id == null and s.embedding_graph == null);
}

test "an embedding model comes with its graph" {
    var env = std.process.EnvMap.init(testing.allocator);
    defer env.deinit();
    var bad: []const u8 = "";
    try env.put("LLAMAEDGE_EMBEDDING_GRAPH", "emb");
    try testing.expect((try settingsFromEnv(&env, &bad)).embedding_model_id == null);
    try env.put("LLAMAEDGE_EMBEDDING_MODEL_ID", "nomic");
    const s = try settingsFromEnv(&env, &bad);
    try testing.expectEqualStrings("nomic", s.embedding_model_id.?);
    try testing.expectEqualStrings("emb", s.embedding_graph.?);
    _ = env.remove("LLAMAEDGE_EMBEDDING_GRAPH");
    try testing.expectEqualStrings("embedding", (try settingsFromEnv(&env, &bad)).embedding_graph.?);
}
