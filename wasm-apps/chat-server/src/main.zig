//! chat-server: the OpenAI chat API as a WebAssembly app. The host runs one
//! instance per HTTP request (WAGI, see docs/host-interface.md) and provides
//! inference through WASI-NN. Without REQUEST_METHOD the app runs as a
//! command: `render-template NAME` (messages JSON on stdin, prompt on stdout)
//! and `list-templates` (command.zig).

const std = @import("std");
const shared = @import("shared");
const settings_mod = @import("settings.zig");
const models = @import("models.zig");
const chat_request = @import("chat/request.zig");
const chat_prompt = @import("chat/prompt.zig");
const chat_completion = @import("chat/completion.zig");
const chat_output = @import("chat/output.zig");
const anthropic_request = @import("anthropic/request.zig");
const anthropic_output = @import("anthropic/output.zig");
const responses_request = @import("responses/request.zig");
const responses_output = @import("responses/output.zig");
const responses_store = @import("responses/store.zig");
const completions_request = @import("completions/request.zig");
const completions = @import("completions/completion.zig");
const embeddings = @import("embeddings/embed.zig");
const rerank_mod = @import("rerank/rerank.zig");
const command = @import("command.zig");
const images = @import("images.zig");

const app = shared.app;
const http = shared.http;
const nn = shared.nn;
const reasoning = shared.reasoning;
const templates = shared.templates;
const ApiError = shared.api_error.ApiError;
const Diagnostic = shared.api_error.Diagnostic;
const Settings = settings_mod.Settings;

pub const std_options: std.Options = .{ .log_level = .info, .logFn = app.logLine };

const log = std.log.scoped(.chat_server);

/// stdout; each writeAll is one fd_write, which the host sends as one chunk.
const Stdout = struct {
    pub fn writeAll(_: Stdout, bytes: []const u8) !void {
        try std.io.getStdOut().writeAll(bytes);
    }
};

pub fn main() u8 {
    const allocator = app.allocator;
    var env = std.process.getEnvMap(allocator) catch {
        log.err("cannot read the environment", .{});
        return 1;
    };
    defer env.deinit();

    const method = env.get("REQUEST_METHOD") orelse return command.run(allocator, &env);
    serve(allocator, &env, method) catch |err| switch (err) {
        error.ClientGone => {
            log.info("the client disconnected: stopped", .{});
            return 0;
        },
        else => {
            log.err("request failed: {s}", .{@errorName(err)});
            return 1;
        },
    };
    return 0;
}

fn serve(allocator: std.mem.Allocator, env: *const std.process.EnvMap, method: []const u8) !void {
    const out = Stdout{};
    var bad_var: []const u8 = "";
    const settings = settings_mod.settingsFromEnv(env, &bad_var) catch {
        var buf: [160]u8 = undefined;
        const message = std.fmt.bufPrint(&buf, "The server is misconfigured: {s} is not a valid number.", .{bad_var}) catch "The server is misconfigured.";
        return sendError(allocator, out, .{ .status = 500, .message = message, .kind = "server_error" }, "");
    };
    const path = env.get("PATH_INFO") orelse "/";
    switch (settings_mod.route(method, path)) {
        .models => {
            var body = std.ArrayList(u8).init(allocator);
            defer body.deinit();
            try models.appendList(&body, settings);
            try send(allocator, out, 200, "", body.items);
        },
        .model => |id| {
            var body = std.ArrayList(u8).init(allocator);
            defer body.deinit();
            if (!try models.appendOne(&body, settings, id)) return sendError(allocator, out, models.modelNotFound(id, settings), "");
            try send(allocator, out, 200, "", body.items);
        },
        .chat_completions => try chatCompletions(allocator, env, out, settings),
        .messages => try anthropicMessages(allocator, env, out, settings, .messages),
        .count_tokens => try anthropicMessages(allocator, env, out, settings, .count_tokens),
        .completions => try textCompletions(allocator, env, out, settings),
        .embeddings => try embed(allocator, env, out, settings),
        .responses => try responses(allocator, env, out, settings),
        .stored_response => |stored| try storedResponse(allocator, out, stored),
        .rerank => try rerank(allocator, env, out, settings),
        .not_found => {
            var buf: [400]u8 = undefined;
            const message = std.fmt.bufPrint(&buf, "Unknown request URL: {s} {s}. This server offers GET /v1/models, GET /v1/models/{{model}}, POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/completions, POST /v1/embeddings, POST /v1/rerank, POST /v1/responses, GET and DELETE /v1/responses/{{id}} and GET /v1/responses/{{id}}/input_items.", .{ method, path }) catch "Unknown request URL.";
            try sendError(allocator, out, .{ .status = 404, .message = message, .code = "unknown_url" }, "");
        },
        .method_not_allowed => |allow| {
            var buf: [200]u8 = undefined;
            const message = std.fmt.bufPrint(&buf, "{s} is not allowed on {s}; use {s}.", .{ method, path, allow }) catch "Method not allowed.";
            var header_buf: [32]u8 = undefined;
            const header = std.fmt.bufPrint(&header_buf, "Allow: {s}\n", .{allow}) catch "";
            if (settings_mod.route("POST", path) == .messages or settings_mod.route("POST", path) == .count_tokens) return sendAnthropicErrorWith(allocator, out, .{ .status = 405, .message = message }, header);
            try sendError(allocator, out, .{ .status = 405, .message = message, .code = "method_not_allowed" }, header);
        },
    }
}

fn chatCompletions(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings) !void {
    const body = (try requestBody(allocator, env, out, settings, .openai)) orelse return;
    defer allocator.free(body);

    var diag = Diagnostic{};
    const image_limits = images.Limits{ .bytes_max = settings.image_bytes_max, .pixels_max = settings.image_pixels_max };
    var req = chat_request.parseChatRequestWith(allocator, body, image_limits, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
    defer req.deinit();
    if (models.textModelError(req.model, settings)) |err| return sendError(allocator, out, err, "");
    if (req.n_images > 0 and !images.hasVision(settings.capabilities)) {
        noVision(&diag, settings) catch {};
        return sendError(allocator, out, diag.err, "");
    }
    const template = promptTemplate(settings) catch return sendError(allocator, out, misconfigured_template, "");
    var backend = nn.Backend.open(settings.graph) catch |err| return modelUnavailable(allocator, out, .openai, settings.graph, err);

    var id_buf: [40]u8 = undefined;
    const cfg = chatConfig(env, settings, template, completionId(&id_buf));
    chat_output.complete(allocator, &backend, out, &req, cfg, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
}

/// POST /v1/messages: Anthropic's Messages API on the chat path, with errors
/// in Anthropic's shape; /v1/messages/count_tokens: the prompt's tokens.
fn anthropicMessages(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings, route: anthropic_request.Route) !void {
    const body = (try requestBody(allocator, env, out, settings, .anthropic)) orelse return;
    defer allocator.free(body);

    var diag = Diagnostic{};
    const image_limits = images.Limits{ .bytes_max = settings.image_bytes_max, .pixels_max = settings.image_pixels_max };
    var parsed = anthropic_request.parseRequestWith(allocator, body, route, image_limits, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendAnthropicError(allocator, out, diag.err),
        else => |e| return e,
    };
    defer parsed.deinit();
    const req = &parsed.chat;
    if (models.textModelError(req.model, settings)) |err| return sendAnthropicError(allocator, out, err);
    if (req.n_images > 0 and !images.hasVision(settings.capabilities)) {
        noVision(&diag, settings) catch {};
        return sendAnthropicError(allocator, out, diag.err);
    }
    const template = promptTemplate(settings) catch return sendAnthropicError(allocator, out, misconfigured_template);
    var backend = nn.Backend.open(settings.graph) catch |err| return modelUnavailable(allocator, out, .anthropic, settings.graph, err);

    var id_buf: [40]u8 = undefined;
    const random_part = completionId(&id_buf)["chatcmpl-".len..];
    var msg_buf: [40]u8 = undefined;
    const msg_id = std.fmt.bufPrint(&msg_buf, "msg_{s}", .{random_part}) catch unreachable;
    const cfg = chatConfig(env, settings, template, msg_id);
    if (route == .count_tokens) {
        defer backend.finish();
        const tokens = chat_prompt.countPromptTokens(allocator, &backend, req, cfg, &diag) catch |err| switch (err) {
            error.InvalidRequest => return sendAnthropicError(allocator, out, diag.err),
            else => |e| return e,
        };
        var count_buf: [48]u8 = undefined;
        return send(allocator, out, 200, "", std.fmt.bufPrint(&count_buf, "{{\"input_tokens\":{d}}}", .{tokens}) catch unreachable);
    }
    var output = anthropic_output.Output(Stdout).init(allocator, out, msg_id, req.model orelse settings.model_id, req.stop, parsed.thinking);
    defer output.deinit();
    chat_completion.generate(allocator, &backend, &output, req, cfg, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendAnthropicError(allocator, out, diag.err),
        else => |e| return e,
    };
}

/// POST /v1/responses: OpenAI's Responses API on the chat path.
fn responses(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings) !void {
    const body = (try requestBody(allocator, env, out, settings, .openai)) orelse return;
    defer allocator.free(body);

    var diag = Diagnostic{};
    const image_limits = images.Limits{ .bytes_max = settings.image_bytes_max, .pixels_max = settings.image_pixels_max };
    var parsed = responses_request.parseRequestWith(allocator, body, responses_store.History{}, image_limits, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
    defer parsed.deinit();
    const req = &parsed.chat;
    if (models.textModelError(req.model, settings)) |err| return sendError(allocator, out, err, "");
    if (req.n_images > 0 and !images.hasVision(settings.capabilities)) {
        noVision(&diag, settings) catch {};
        return sendError(allocator, out, diag.err, "");
    }
    const template = promptTemplate(settings) catch return sendError(allocator, out, misconfigured_template, "");
    var backend = nn.Backend.open(settings.graph) catch |err| return modelUnavailable(allocator, out, .openai, settings.graph, err);

    var id_buf: [40]u8 = undefined;
    const resp_id = randomId(&id_buf, "resp_");
    // What was left out is said, never dropped in silence: a header and the log.
    var header_buf: [320]u8 = undefined;
    const headers = if (parsed.left_out.len > 0) blk: {
        log.warn("{s}: left out tools this server cannot run: {s}", .{ resp_id, parsed.left_out });
        break :blk std.fmt.bufPrint(&header_buf, "{s}: {s}\n", .{ responses_output.ignored_tools_header, parsed.left_out }) catch "";
    } else "";
    const cfg = chatConfig(env, settings, template, resp_id);
    const envelope = responses_output.Envelope{ .id = resp_id, .created_at = cfg.created, .model = req.model orelse settings.model_id, .req = &parsed };
    var output = responses_output.Output(Stdout).init(allocator, out, envelope, headers);
    defer output.deinit();
    chat_completion.generate(allocator, &backend, &output, req, cfg, &diag) catch |err| switch (err) {
        error.InvalidRequest => {
            // The chat path names its messages; here they came from `input`.
            if (diag.err.param) |p| if (std.mem.eql(u8, p, "messages")) {
                diag.err.param = "input";
            };
            return sendError(allocator, out, diag.err, "");
        },
        else => |e| return e,
    };
    // Kept once the client has it: a failed response (no final object) is not.
    if (parsed.store and output.final.items.len > 0)
        try responses_store.save(parsed.chat.arena.allocator(), resp_id, output.final.items, parsed.items);
}

/// GET /v1/responses/{id}, its input_items, and DELETE.
fn storedResponse(allocator: std.mem.Allocator, out: Stdout, stored: settings_mod.StoredResponse) !void {
    var arena_state = std.heap.ArenaAllocator.init(allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    var body = std.ArrayList(u8).init(arena);
    const found = switch (stored.action) {
        .get => try responses_store.appendResponse(arena, &body, stored.id),
        .input_items => try responses_store.appendInputItems(arena, &body, stored.id),
        .delete => blk: {
            if (!responses_store.delete(stored.id)) break :blk false;
            try body.writer().print("{{\"id\":{s},\"object\":\"response\",\"deleted\":true}}", .{try std.json.stringifyAlloc(arena, stored.id, .{})});
            break :blk true;
        },
    };
    var buf: [400]u8 = undefined;
    if (!found) return sendError(allocator, out, responses_store.notFound(&buf, stored.id), "");
    try send(allocator, out, 200, "", body.items);
}

fn sendAnthropicError(allocator: std.mem.Allocator, out: Stdout, err: ApiError) !void {
    return sendAnthropicErrorWith(allocator, out, err, "");
}

fn sendAnthropicErrorWith(allocator: std.mem.Allocator, out: Stdout, err: ApiError, headers: []const u8) !void {
    var body = std.ArrayList(u8).init(allocator);
    defer body.deinit();
    try anthropic_output.appendError(&body, err);
    try send(allocator, out, err.status, headers, body.items);
}

/// Whose error shape a route answers in.
const Api = enum { openai, anthropic };

fn sendApiError(allocator: std.mem.Allocator, out: Stdout, api: Api, err: ApiError) !void {
    return switch (api) {
        .openai => sendError(allocator, out, err, ""),
        .anthropic => sendAnthropicError(allocator, out, err),
    };
}

/// The request body, or null when it was refused (and that answered).
fn requestBody(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings, api: Api) !?[]u8 {
    return http.readBody(allocator, std.io.getStdIn().reader(), env.get("CONTENT_LENGTH"), settings.max_body_bytes) catch |err| switch (err) {
        error.TooLarge => {
            var buf: [160]u8 = undefined;
            const message = std.fmt.bufPrint(&buf, "The request body is larger than this server's limit of {d} bytes.", .{settings.max_body_bytes}) catch "The request body is too large.";
            try sendApiError(allocator, out, api, .{ .status = 413, .message = message, .code = "request_too_large" });
            return null;
        },
        error.BadLength => {
            try sendApiError(allocator, out, api, .{ .status = 400, .message = "CONTENT_LENGTH is not a number." });
            return null;
        },
        else => |e| return e,
    };
}

fn modelUnavailable(allocator: std.mem.Allocator, out: Stdout, api: Api, graph: []const u8, err: anyerror) !void {
    log.err("cannot open model '{s}': {s}", .{ graph, @errorName(err) });
    return sendApiError(allocator, out, api, .{ .status = 500, .message = "The model is not available; the server log has the details.", .kind = "server_error" });
}

/// A 400 for images sent to a model that reads none, naming it and what it can do.
fn noVision(diag: *Diagnostic, settings: Settings) error{InvalidRequest}!void {
    const capabilities = if (settings.capabilities.len > 0) settings.capabilities else "none listed";
    return diag.set(400, "messages", "model_not_vision", "The model '{s}' does not read images: its capabilities are {s}. Send text only, or serve a vision model with its projector.", .{ settings.model_id, capabilities });
}

const misconfigured_template = ApiError{ .status = 500, .message = "The server is misconfigured: unknown prompt template.", .kind = "server_error" };

/// The named prompt template (LLAMAEDGE_PROMPT_TEMPLATE); null for "auto", the model's own.
fn promptTemplate(settings: Settings) error{UnknownTemplate}!?templates.Template {
    if (std.mem.eql(u8, settings.template, "auto")) return null;
    return templates.Template.fromName(settings.template) orelse {
        log.err("unknown prompt template '{s}' (LLAMAEDGE_PROMPT_TEMPLATE); run `list-templates` for the names", .{settings.template});
        return error.UnknownTemplate;
    };
}

fn chatConfig(env: *const std.process.EnvMap, settings: Settings, template: ?templates.Template, id: []const u8) chat_completion.Config {
    return .{
        .model_id = settings.model_id,
        .ctx_size = settings.ctx_size,
        .template = template,
        .created = std.time.timestamp(),
        .id = id,
        .reasoning_format = reasoning.Format.parse(env.get("LLAMAEDGE_REASONING_FORMAT") orelse "auto") orelse .auto,
    };
}

/// `chatcmpl-` and 24 random letters and digits.
fn completionId(buf: *[40]u8) []const u8 {
    return randomId(buf, "chatcmpl-");
}

/// `prefix` and 24 random letters and digits.
fn randomId(buf: *[40]u8, comptime prefix: []const u8) []const u8 {
    const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    var raw: [24]u8 = undefined;
    std.crypto.random.bytes(&raw);
    @memcpy(buf[0..prefix.len], prefix);
    for (raw, 0..) |byte, i| buf[prefix.len + i] = alphabet[byte % alphabet.len];
    return buf[0 .. prefix.len + raw.len];
}

// ---------------------------------------------------------------------------
// /v1/completions and /v1/embeddings

fn textCompletions(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings) !void {
    const body = (try requestBody(allocator, env, out, settings, .openai)) orelse return;
    defer allocator.free(body);
    var diag = Diagnostic{};
    var req = completions_request.parseRequest(allocator, body, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
    defer req.deinit();
    if (models.textModelError(req.model, settings)) |err| return sendError(allocator, out, err, "");

    var backend = nn.Backend.open(settings.graph) catch |err| return modelUnavailable(allocator, out, .openai, settings.graph, err);
    var id_buf: [40]u8 = undefined;
    const cfg = completions.Config{
        .model_id = settings.model_id,
        .ctx_size = settings.ctx_size,
        .created = std.time.timestamp(),
        .id = randomId(&id_buf, "cmpl-"),
        .random_seed = std.crypto.random.int(u31),
        .slots = settings.parallel,
    };
    completions.complete(allocator, &backend, out, &req, cfg, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
}

fn embed(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings) !void {
    const body = (try requestBody(allocator, env, out, settings, .openai)) orelse return;
    defer allocator.free(body);
    var diag = Diagnostic{};
    var req = embeddings.parseRequest(allocator, body, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
    defer req.deinit();

    const model = embeddingModel(req.model, settings) orelse return sendError(allocator, out, models.modelNotFound(req.model.?, settings), "");
    var backend = nn.Backend.openWithConfig(model.graph, "{\"embedding\":true}") catch |err| return modelUnavailable(allocator, out, .openai, model.graph, err);
    embeddings.embed(allocator, &backend, out, &req, .{ .model_id = model.id }, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
}

/// The model an embedding-mode request (/v1/embeddings, /v1/rerank) runs on:
/// the embedding model when there is one, unless the chat model is asked for;
/// null when it names neither.
fn embeddingModel(asked: ?[]const u8, settings: Settings) ?struct { id: []const u8, graph: []const u8 } {
    const id = settings.embedding_model_id orelse settings.model_id;
    const graph = settings.embedding_graph orelse settings.graph;
    const name = asked orelse return .{ .id = id, .graph = graph };
    if (std.mem.eql(u8, name, settings.model_id)) return .{ .id = settings.model_id, .graph = settings.graph };
    if (std.mem.eql(u8, name, id)) return .{ .id = id, .graph = graph };
    return null;
}

/// POST /v1/rerank (the host hands /rerank here too): see rerank/rerank.zig.
fn rerank(allocator: std.mem.Allocator, env: *const std.process.EnvMap, out: Stdout, settings: Settings) !void {
    const body = (try requestBody(allocator, env, out, settings, .openai)) orelse return;
    defer allocator.free(body);
    var diag = Diagnostic{};
    var req = rerank_mod.parseRequest(allocator, body, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
    defer req.deinit();
    const model = embeddingModel(req.model, settings) orelse return sendError(allocator, out, models.modelNotFound(req.model.?, settings), "");
    // Rank pooling is asked of the context (rerank.metadata): a model that cannot rerank is
    // then a 400 of its own, not a load failure.
    var backend = nn.Backend.openWithConfig(model.graph, "{\"embedding\":true}") catch |err| return modelUnavailable(allocator, out, .openai, model.graph, err);
    var id_buf: [40]u8 = undefined;
    rerank_mod.rerank(allocator, &backend, out, &req, .{ .model_id = model.id, .id = randomId(&id_buf, "rerank-") }, &diag) catch |err| switch (err) {
        error.InvalidRequest => return sendError(allocator, out, diag.err, ""),
        else => |e| return e,
    };
}

fn send(allocator: std.mem.Allocator, out: Stdout, status: u16, headers: []const u8, body: []const u8) !void {
    http.writeJson(allocator, out, status, headers, body) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return error.ClientGone,
    };
}

fn sendError(allocator: std.mem.Allocator, out: Stdout, err: ApiError, headers: []const u8) !void {
    http.writeError(allocator, out, err, headers) catch |e| switch (e) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return error.ClientGone,
    };
}

test {
    // Every file of the app, for its tests (the shared module is tested on its own).
    _ = @import("settings.zig");
    _ = @import("command.zig");
    _ = @import("models.zig");
    _ = @import("fields.zig");
    _ = @import("inputs.zig");
    _ = @import("generation.zig");
    _ = @import("chat/request.zig");
    _ = @import("images.zig");
    _ = @import("chat/request_tools.zig");
    _ = @import("chat/request_reasoning.zig");
    _ = @import("chat/metadata.zig");
    _ = @import("chat/prompt.zig");
    _ = @import("chat/completion.zig");
    _ = @import("chat/response.zig");
    _ = @import("chat/output.zig");
    _ = @import("chat/tests.zig");
    _ = @import("tools/formats.zig");
    _ = @import("tools/grammar.zig");
    _ = @import("tools/scan.zig");
    _ = @import("tools/markup.zig");
    _ = @import("tools/parse.zig");
    _ = @import("tools/stream.zig");
    _ = @import("anthropic/request.zig");
    _ = @import("anthropic/output.zig");
    _ = @import("responses/request.zig");
    _ = @import("responses/items.zig");
    _ = @import("responses/output.zig");
    _ = @import("responses/store.zig");
    _ = @import("completions/request.zig");
    _ = @import("completions/response.zig");
    _ = @import("completions/completion.zig");
    _ = @import("completions/tests.zig");
    _ = @import("embeddings/embed.zig");
    _ = @import("embeddings/vectors.zig");
    _ = @import("rerank/rerank.zig");
}

test "completion ids are chatcmpl- and 24 letters or digits, and differ" {
    var a: [40]u8 = undefined;
    var b: [40]u8 = undefined;
    const id_a = completionId(&a);
    const id_b = completionId(&b);
    try std.testing.expect(std.mem.startsWith(u8, id_a, "chatcmpl-"));
    try std.testing.expectEqual(@as(usize, 33), id_a.len);
    for (id_a[9..]) |c| try std.testing.expect(std.ascii.isAlphanumeric(c));
    try std.testing.expect(!std.mem.eql(u8, id_a, id_b));
}
