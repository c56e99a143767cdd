//! review: a code-review endpoint as a WAGI app (docs/apps.md). POST a unified
//! diff as the body; the answer is `{"comments":[{"file","line","comment"}]}`.
//! Inference is WASI-NN through the apps' shared bindings (the `shared`
//! module); errors are OpenAI-style JSON.

const std = @import("std");
const shared = @import("shared");
const review = @import("review.zig");

const app = shared.app;
const http = shared.http;
const nn = shared.nn;
const defaults = shared.defaults;

pub const std_options: std.Options = .{ .log_level = .info, .logFn = app.logLine };

const log = std.log.scoped(.review);

pub fn main() u8 {
    const allocator = app.allocator;
    var env = std.process.getEnvMap(allocator) catch {
        log.err("cannot read the environment", .{});
        return 1;
    };
    defer env.deinit();
    serve(allocator, &env) catch |err| {
        log.err("request failed: {s}", .{@errorName(err)});
        return 1;
    };
    return 0;
}

fn envNumber(env: *const std.process.EnvMap, name: []const u8, default: u32) u32 {
    const text = env.get(name) orelse return default;
    return std.fmt.parseInt(u32, text, 10) catch default;
}

fn serve(allocator: std.mem.Allocator, env: *const std.process.EnvMap) !void {
    const method = env.get("REQUEST_METHOD") orelse {
        std.io.getStdErr().writeAll("review is a WAGI app: run it with `llamaedge serve --app /review=review.wasm`\n") catch {};
        return error.NotARequest;
    };
    const path = env.get("PATH_INFO") orelse "";
    if (path.len > 1) return sendError(allocator, .{ .status = 404, .message = "Unknown path: POST the diff to the app's route itself.", .code = "unknown_url" });
    if (!std.mem.eql(u8, method, "POST")) return http.writeError(allocator, std.io.getStdOut(), .{ .status = 405, .message = "Send the diff with POST.", .code = "method_not_allowed" }, "Allow: POST\n");

    const limit = envNumber(env, "LLAMAEDGE_MAX_BODY_BYTES", defaults.max_body_bytes);
    if (envNumber(env, "CONTENT_LENGTH", 0) > limit) return sendError(allocator, .{ .status = 413, .message = "The diff is larger than the server accepts.", .code = "request_too_large" });
    const diff = try std.io.getStdIn().readToEndAlloc(allocator, limit);
    defer allocator.free(diff);
    if (!review.isUnifiedDiff(diff)) return sendError(allocator, .{ .status = 400, .message = "The body must be a unified diff (as `git diff` or `diff -u` prints it).", .code = "invalid_diff" });

    const graph = env.get("LLAMAEDGE_MODEL_GRAPH") orelse defaults.graph;
    var backend = nn.Backend.open(graph) catch |err| switch (err) {
        error.ModelNotFound => return sendError(allocator, .{ .status = 500, .message = "The server has no model for the review app.", .kind = "server_error" }),
        else => return sendError(allocator, .{ .status = 500, .message = "The model could not be opened.", .kind = "server_error" }),
    };
    // The files the diff touches, read through the `files` tool when the server mounts it
    // and this app's policy covers its directory (docs/tools.md); else the diff alone.
    const ctx_size = envNumber(env, "LLAMAEDGE_CTX_SIZE", defaults.ctx_size);
    var caller = shared.call.Caller{};
    const message = try review.withFiles(allocator, &caller, diff, ctx_size);
    defer allocator.free(message);
    const answer = review.review(allocator, &backend, message, ctx_size) catch |err| switch (err) {
        error.TooLong => return sendError(allocator, .{ .status = 413, .message = "The diff is too long for the model's context.", .code = "context_length_exceeded" }),
        error.Incomplete => return sendError(allocator, .{ .status = 500, .message = "The review was cut short (the token limit) before it was complete.", .kind = "server_error", .code = "review_incomplete" }),
        else => return sendError(allocator, .{ .status = 500, .message = "The model failed while reviewing.", .kind = "server_error" }),
    };
    defer allocator.free(answer);
    try http.writeJson(allocator, std.io.getStdOut(), 200, "", answer);
}

fn sendError(allocator: std.mem.Allocator, err: shared.api_error.ApiError) !void {
    try http.writeError(allocator, std.io.getStdOut(), err, "");
}

test {
    _ = @import("review.zig");
}
