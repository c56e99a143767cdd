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

/// The files a diff touches, at most this many, and this many bytes of them in
/// all (and no more bytes than the context has tokens: about a quarter of it):
/// they give the model the code around the change, and leave room for the diff.
pub const context_files_max = 8;
pub const context_bytes_max = 12 * 1024;

/// The paths of the files the diff changes (its `+++ b/PATH` lines; not a
/// deleted file's `/dev/null`), slices of `diff`, at most `context_files_max`.
pub fn changedFiles(allocator: std.mem.Allocator, diff: []const u8) ![][]const u8 {
    var paths = std.ArrayList([]const u8).init(allocator);
    errdefer paths.deinit();
    var lines = std.mem.splitScalar(u8, diff, '\n');
    while (lines.next()) |raw| {
        const line = std.mem.trimRight(u8, raw, "\r");
        if (!std.mem.startsWith(u8, line, "+++ ")) continue;
        var path = line[4..];
        if (std.mem.indexOfScalar(u8, path, '\t')) |tab| path = path[0..tab]; // diff -u adds a date
        if (std.mem.eql(u8, path, "/dev/null")) continue;
        if (std.mem.startsWith(u8, path, "b/")) path = path[2..];
        if (path.len == 0) continue;
        try paths.append(path);
        if (paths.items.len == context_files_max) break;
    }
    return paths.toOwnedSlice();
}

/// The user message: the files the diff touches, read through the `files`
/// tool (`caller.call`: shared.call.Caller, or a fake in the tests), then the
/// diff. A file the tool cannot give (no such tool, not granted, not found,
/// not text) is left out: the review goes on with the diff alone.
pub fn withFiles(allocator: std.mem.Allocator, caller: anytype, diff: []const u8, ctx_size: u32) ![]u8 {
    const paths = try changedFiles(allocator, diff);
    defer allocator.free(paths);
    var message = std.ArrayList(u8).init(allocator);
    errdefer message.deinit();
    var budget: usize = @min(context_bytes_max, ctx_size);
    for (paths) |path| {
        const input = try std.json.stringifyAlloc(allocator, .{ .op = "read", .path = path }, .{});
        defer allocator.free(input);
        const result = caller.call(allocator, "files", input) catch |err| switch (err) {
            error.OutOfMemory => return error.OutOfMemory,
            else => break, // no files tool: none of the files can be read
        };
        defer allocator.free(result.json);
        if (!result.ok) continue;
        const parsed = std.json.parseFromSlice(struct { content: []const u8 }, allocator, result.json, .{ .ignore_unknown_fields = true }) catch continue;
        defer parsed.deinit();
        const content = parsed.value.content;
        if (content.len > budget) continue;
        budget -= content.len;
        if (message.items.len == 0) try message.appendSlice("The files the diff changes, as they are now:\n\n");
        try message.writer().print("### {s}\n```\n{s}{s}```\n\n", .{ path, content, @as([]const u8, if (std.mem.endsWith(u8, content, "\n")) "" else "\n") });
    }
    if (message.items.len > 0) try message.appendSlice("The diff:\n");
    try message.appendSlice(diff);
    return message.toOwnedSlice();
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

const FakeCaller = struct {
    /// The result of a read of each path (none: not found); `mounted` false: no files tool.
    files: []const struct { []const u8, []const u8 } = &.{},
    mounted: bool = true,
    calls: usize = 0,

    pub fn call(self: *FakeCaller, allocator: std.mem.Allocator, name: []const u8, input: []const u8) shared.call.Error!shared.call.Result {
        self.calls += 1;
        if (!self.mounted or !std.mem.eql(u8, name, "files")) return error.NoSuchTool;
        for (self.files) |entry| {
            if (std.mem.indexOf(u8, input, entry[0]) != null) {
                return .{ .ok = true, .json = try std.json.stringifyAlloc(allocator, .{ .path = entry[0], .content = entry[1], .truncated = false }, .{}) };
            }
        }
        return .{ .ok = false, .json = try allocator.dupe(u8, "{\"error\":\"no such file\",\"code\":\"tool_failed\"}") };
    }
};

test "the files a diff changes are its +++ paths" {
    const paths = try changedFiles(testing.allocator, "--- a/x.py\n+++ b/x.py\n@@\n--- a/old\n+++ /dev/null\n--- /dev/null\n+++ b/src/new.zig\t2026-01-01\n");
    defer testing.allocator.free(paths);
    try testing.expectEqual(@as(usize, 2), paths.len);
    try testing.expectEqualStrings("x.py", paths[0]);
    try testing.expectEqualStrings("src/new.zig", paths[1]);
}

test "the files read through the files tool come before the diff" {
    var caller = FakeCaller{ .files = &.{.{ "calc.py", "def mean(xs):\n    return sum(xs) / (len(xs) - 1)\n" }} };
    const message = try withFiles(testing.allocator, &caller, sample_diff, 2048);
    defer testing.allocator.free(message);
    try testing.expect(std.mem.startsWith(u8, message, "The files the diff changes, as they are now:\n\n### calc.py\n```\ndef mean(xs):\n"));
    try testing.expect(std.mem.endsWith(u8, message, "```\n\nThe diff:\n" ++ sample_diff));
}

test "without the files tool, or a file it cannot read, the message is the diff" {
    var none = FakeCaller{ .mounted = false };
    const alone = try withFiles(testing.allocator, &none, sample_diff, 2048);
    defer testing.allocator.free(alone);
    try testing.expectEqualStrings(sample_diff, alone);
    var missing = FakeCaller{};
    const still = try withFiles(testing.allocator, &missing, sample_diff, 2048);
    defer testing.allocator.free(still);
    try testing.expectEqualStrings(sample_diff, still);
    try testing.expectEqual(@as(usize, 1), missing.calls);
}
