//! The review itself: a unified diff in, review comments out as JSON that
//! the model is constrained to (`json-schema` metadata), so that even a small
//! model answers `{"comments":[{"file":..,"line":..,"comment":..}]}`.
//! Takes the backend as `anytype` (nn.Backend, or FakeBackend in the tests).

const std = @import("std");
const shared = @import("shared");

const templates = shared.templates;

/// What the answer must be, as the grammar enforces it.
pub const schema =
    \\{"type":"object","properties":{"comments":{"type":"array","maxItems":8,"items":{"type":"object",
    \\"properties":{"file":{"type":"string"},"line":{"type":"integer","minimum":1},"comment":{"type":"string"}},
    \\"required":["file","line","comment"],"additionalProperties":false}}},
    \\"required":["comments"],"additionalProperties":false}
;

const system_prompt =
    "You are a careful code reviewer. Read the unified diff and point out bugs, risks and unclear code " ++
    "in the lines it adds. For each comment give the file, the line number in the new version of the file, " ++
    "and one short sentence. Answer in JSON. If the change is fine, answer with an empty list of comments.";

/// The longest review generated, in tokens (the context may cap it lower).
pub const max_review_tokens: u32 = 768;

pub const Failure = error{
    /// The answer was cut (the token limit) before the JSON was complete.
    Incomplete,
    /// The diff and the answer do not fit the model's context.
    TooLong,
};

/// Whether `body` looks like a unified diff: a `--- ` / `+++ ` header pair,
/// or a `diff ` line.
pub fn isUnifiedDiff(body: []const u8) bool {
    var has_old = false;
    var lines = std.mem.splitScalar(u8, body, '\n');
    while (lines.next()) |line| {
        if (std.mem.startsWith(u8, line, "diff ")) return true;
        if (std.mem.startsWith(u8, line, "--- ")) has_old = true;
        if (has_old and std.mem.startsWith(u8, line, "+++ ")) return true;
    }
    return false;
}

/// The prompt: the model's own chat template, or ChatML when it has none.
fn prompt(allocator: std.mem.Allocator, backend: anytype, diff: []const u8) ![]u8 {
    const messages = [_]templates.Message{
        .{ .role = .system, .content = system_prompt },
        .{ .role = .user, .content = diff },
    };
    var request = std.ArrayList(u8).init(allocator);
    defer request.deinit();
    try shared.template_request.append(&request, &messages, &.{}, .{});
    return backend.renderTemplate(allocator, request.items) catch |err| switch (err) {
        error.NoTemplate => templates.render(allocator, .chatml, &messages),
        else => |e| return e,
    };
}

/// The prompt's tokens, as the host counted them (0 when it does not say).
fn inputTokens(allocator: std.mem.Allocator, backend: anytype) !u32 {
    const info = try backend.info(allocator);
    defer info.deinit();
    return info.value.promptTokens() orelse 0;
}

/// Reviews `diff` and returns the answer, JSON valid under `schema`. Caller owns it.
pub fn review(allocator: std.mem.Allocator, backend: anytype, diff: []const u8, ctx_size: u32) ![]u8 {
    const text = try prompt(allocator, backend, diff);
    defer allocator.free(text);
    backend.setPrompt(text) catch |err| switch (err) {
        error.PromptTooLong => return error.TooLong,
        else => |e| return e,
    };
    const used = try inputTokens(allocator, backend);
    if (used + 16 >= ctx_size) return error.TooLong;
    const n_predict = @min(max_review_tokens, ctx_size - used);

    var metadata = std.ArrayList(u8).init(allocator);
    defer metadata.deinit();
    try metadata.writer().print("{{\"n-predict\":{d},\"temp\":0,\"json-schema\":{s}}}", .{ n_predict, schema });
    try backend.setMetadata(metadata.items);

    var answer = std.ArrayList(u8).init(allocator);
    errdefer answer.deinit();
    defer backend.finish();
    while (true) {
        switch (try backend.next()) {
            .token => |bytes| try answer.appendSlice(bytes),
            .end => break,
        }
    }
    // The grammar makes every complete answer valid; a cut one is not.
    const parsed = std.json.parseFromSlice(std.json.Value, allocator, answer.items, .{}) catch return error.Incomplete;
    parsed.deinit();
    return answer.toOwnedSlice();
}

// ---------------------------------------------------------------------------
// Tests

const testing = std.testing;

const FakeBackend = shared.test_support.FakeBackend;

const sample_diff =
    \\--- a/calc.py
    \\+++ b/calc.py
    \\@@ -1,2 +1,2 @@
    \\ def mean(xs):
    \\-    return sum(xs) / len(xs)
    \\+    return sum(xs) / (len(xs) - 1)
    \\
;

test "a unified diff is recognised, other text is not" {
    try testing.expect(isUnifiedDiff(sample_diff));
    try testing.expect(isUnifiedDiff("diff --git a/x b/x\nindex 1..2\n"));
    try testing.expect(!isUnifiedDiff("please review my code"));
    try testing.expect(!isUnifiedDiff("+++ b/x only\n"));
}

test "the answer is the generated JSON, the schema is in the metadata" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "{\"comments\":[{\"file\":\"calc.py\",", "\"line\":2,\"comment\":\"off by one\"}]}" }, .prompt_tokens = 10 };
    defer backend.deinit();
    const answer = try review(testing.allocator, &backend, sample_diff, 2048);
    defer testing.allocator.free(answer);
    try testing.expectEqualStrings("{\"comments\":[{\"file\":\"calc.py\",\"line\":2,\"comment\":\"off by one\"}]}", answer);
    try testing.expectEqual(@as(usize, 1), backend.finished);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"json-schema\":{\"type\":\"object\"") != null);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"n-predict\":768") != null);
    // The diff reaches the model inside the template request, escaped as JSON.
    try testing.expect(std.mem.startsWith(u8, backend.prompt.items, "JINJA{\"messages\":[{\"role\":\"system\""));
    try testing.expect(std.mem.indexOf(u8, backend.prompt.items, "+++ b/calc.py\\n") != null);
}

test "without a template the prompt is ChatML" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"{\"comments\":[]}"}, .has_template = false, .prompt_tokens = 10 };
    defer backend.deinit();
    const answer = try review(testing.allocator, &backend, sample_diff, 2048);
    defer testing.allocator.free(answer);
    try testing.expect(std.mem.startsWith(u8, backend.prompt.items, "<|im_start|>system\n"));
}

test "a cut answer is incomplete, a full context is too long" {
    var cut = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"{\"comments\":[{\"file\":"}, .prompt_tokens = 10 };
    defer cut.deinit();
    try testing.expectError(error.Incomplete, review(testing.allocator, &cut, sample_diff, 2048));
    var full = FakeBackend{ .allocator = testing.allocator, .tokens = &.{}, .prompt_tokens = 2040 };
    defer full.deinit();
    try testing.expectError(error.TooLong, review(testing.allocator, &full, sample_diff, 2048));
}

test "n-predict leaves room in a small context" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"{\"comments\":[]}"}, .prompt_tokens = 300 };
    defer backend.deinit();
    const answer = try review(testing.allocator, &backend, sample_diff, 512);
    defer testing.allocator.free(answer);
    try testing.expect(std.mem.indexOf(u8, backend.metadata.items, "\"n-predict\":212") != null);
}
