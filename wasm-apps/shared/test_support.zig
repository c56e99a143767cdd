//! What the apps' `test` blocks share: scripted backends in place of the host
//! (the `backend: anytype` of the app logic: generation, and embedding-mode
//! batches), a writer whose client has gone, and checks on WAGI responses
//! and diagnostics.
//! Referenced from tests only, so it is never part of a built app.

const std = @import("std");
const nn = @import("nn.zig");
const templates = @import("templates.zig");
const Diagnostic = @import("api_error.zig").Diagnostic;

const testing = std.testing;

/// A scripted backend: each answer is `tokens` (the script restarts with
/// every prompt), a prompt counts one token per four bytes (or
/// `prompt_tokens`), one over `host_ctx` tokens is refused as the host does,
/// and the host says "length" after `length_after` tokens. It records the
/// prompt and metadata it was given.
pub const FakeBackend = struct {
    allocator: std.mem.Allocator,
    tokens: []const []const u8 = &.{ "Hi", " there" },
    fail_at: ?usize = null,
    length_after: ?usize = null,
    has_template: bool = true,
    template_fails: bool = false,
    /// What the fake template puts after the request (a generation prompt).
    prompt_suffix: []const u8 = "",
    host_ctx: usize = 1 << 20,
    /// The prompt's token count in `info`, when not counted from its bytes.
    prompt_tokens: ?u32 = null,
    /// Answer logprob entries (get_output_single index 2).
    logprobs: bool = false,
    next_index: usize = 0,
    prompt: std.ArrayListUnmanaged(u8) = .empty,
    metadata: std.ArrayListUnmanaged(u8) = .empty,
    prompts_set: usize = 0,
    finished: usize = 0,
    forks: usize = 0,
    is_fork: bool = false,

    pub const Error = nn.Error || std.mem.Allocator.Error;

    pub fn deinit(self: *FakeBackend) void {
        self.prompt.deinit(self.allocator);
        self.metadata.deinit(self.allocator);
    }

    pub fn fork(self: *FakeBackend) Error!FakeBackend {
        self.forks += 1;
        return .{ .allocator = self.allocator, .tokens = self.tokens, .logprobs = self.logprobs, .is_fork = true };
    }

    pub fn tokenLogprobs(self: *FakeBackend, allocator: std.mem.Allocator) Error![]u8 {
        if (!self.logprobs) return error.BackendFailed;
        const token = self.tokens[self.next_index - 1];
        var out = std.ArrayList(u8).init(allocator);
        errdefer out.deinit();
        try out.writer().print("{{\"id\":{d},\"token\":", .{self.next_index});
        try std.json.encodeJsonString(token, .{}, out.writer());
        try out.appendSlice(",\"bytes\":[");
        for (token, 0..) |b, i| try out.writer().print("{s}{d}", .{ if (i > 0) "," else "", b });
        try out.writer().print("],\"logprob\":-0.25,\"top_logprobs\":[{{\"id\":{d},\"token\":\"x\",\"bytes\":[120],\"logprob\":-0.25}}]}}", .{self.next_index});
        return out.toOwnedSlice();
    }

    pub fn renderTemplate(self: *FakeBackend, allocator: std.mem.Allocator, request_json: []const u8) Error![]u8 {
        if (!self.has_template) return error.NoTemplate;
        if (self.template_fails) return error.TemplateFailed;
        return std.fmt.allocPrint(allocator, "JINJA{s}{s}", .{ request_json, self.prompt_suffix });
    }

    /// Refuses a logit-bias entry for token 99999, as the host refuses a token the model lacks.
    pub fn setMetadata(self: *FakeBackend, json: []const u8) Error!void {
        if (std.mem.indexOf(u8, json, "\"logit-bias\":{\"99999\"") != null) return error.InvalidInput;
        self.metadata.clearRetainingCapacity();
        try self.metadata.appendSlice(self.allocator, json);
    }

    pub fn setPrompt(self: *FakeBackend, prompt: []const u8) Error!void {
        self.prompts_set += 1;
        self.next_index = 0;
        self.prompt.clearRetainingCapacity();
        try self.prompt.appendSlice(self.allocator, prompt);
        if (prompt.len / 4 >= self.host_ctx) return error.PromptTooLong;
    }

    pub fn info(self: *FakeBackend, allocator: std.mem.Allocator) Error!std.json.Parsed(nn.Info) {
        const input_tokens = self.prompt_tokens orelse self.prompt.items.len / 4;
        return infoOf(allocator, "{{\"input_tokens\":{d},\"output_tokens\":0,\"llama_build_number\":7}}", .{input_tokens});
    }

    pub fn cachedTokens(_: *FakeBackend) u32 {
        return 0;
    }

    /// The prompt counted as `info` counts it, read in 2 ms; the tokens so far in 8.
    pub fn timings(self: *FakeBackend) ?nn.Timings {
        return .{ .prompt_n = @intCast(self.prompt_tokens orelse self.prompt.items.len / 4), .prompt_ms = 2, .predicted_n = @intCast(self.next_index), .predicted_ms = 8 };
    }

    pub fn next(self: *FakeBackend) Error!nn.Step {
        if (self.fail_at) |at| if (self.next_index == at) return error.BackendFailed;
        if (self.length_after) |n| if (self.next_index == n) return .{ .end = .length };
        if (self.next_index >= self.tokens.len) return .{ .end = .stop };
        defer self.next_index += 1;
        return .{ .token = self.tokens[self.next_index] };
    }

    pub fn finish(self: *FakeBackend) void {
        self.finished += 1;
        if (self.is_fork) self.deinit();
    }
};

/// A scripted embedding-mode backend (what the embeddings and rerank routes
/// call): it records the metadata and the batch it was given, refuses the
/// metadata with `metadata_error` and the batch (set_input 3) with
/// `batch_error` when set, and leaves the numbers to `Model`: each batch item
/// (as JSON) gives `model.valuesEach()` float32 values (`model.values(item,
/// out)`, get_output 2) and `Model.tokens(item)` prompt tokens (`info`).
pub fn BatchBackend(comptime Model: type) type {
    return struct {
        const Self = @This();

        allocator: std.mem.Allocator,
        model: Model = .{},
        metadata_error: ?nn.Error = null,
        batch_error: ?nn.Error = null,
        metadata: std.ArrayListUnmanaged(u8) = .empty,
        batch: std.ArrayListUnmanaged(u8) = .empty,
        computed: bool = false,
        /// What the app expected get_output(2) to need.
        size_hint: usize = 0,

        pub const Error = nn.Error || std.mem.Allocator.Error;

        pub fn deinit(self: *Self) void {
            self.metadata.deinit(self.allocator);
            self.batch.deinit(self.allocator);
        }

        pub fn setMetadata(self: *Self, json: []const u8) Error!void {
            if (self.metadata_error) |err| return err;
            self.metadata.clearRetainingCapacity();
            try self.metadata.appendSlice(self.allocator, json);
        }

        pub fn setBatch(self: *Self, json: []const u8) Error!void {
            if (self.batch_error) |err| return err;
            self.batch.clearRetainingCapacity();
            try self.batch.appendSlice(self.allocator, json);
        }

        pub fn compute(self: *Self) Error!void {
            self.computed = true;
        }

        fn items(self: *Self, allocator: std.mem.Allocator) !std.json.Parsed(std.json.Value) {
            return std.json.parseFromSlice(std.json.Value, allocator, self.batch.items, .{});
        }

        pub fn output(self: *Self, allocator: std.mem.Allocator, index: u32, size_hint: usize) ![]u8 {
            std.debug.assert(index == 2);
            self.size_hint = size_hint;
            const parsed = try self.items(allocator);
            defer parsed.deinit();
            const n = self.model.valuesEach();
            const raw = try allocator.alloc(u8, parsed.value.array.items.len * n * 4);
            errdefer allocator.free(raw);
            const values = try allocator.alloc(f32, n);
            defer allocator.free(values);
            for (parsed.value.array.items, 0..) |item, i| {
                self.model.values(item, values);
                for (values, 0..) |x, j| std.mem.writeInt(u32, raw[(i * n + j) * 4 ..][0..4], @bitCast(x), .little);
            }
            return raw;
        }

        pub fn info(self: *Self, allocator: std.mem.Allocator) !std.json.Parsed(nn.Info) {
            const parsed = try self.items(allocator);
            defer parsed.deinit();
            var each = std.ArrayList(u8).init(allocator);
            defer each.deinit();
            for (parsed.value.array.items, 0..) |item, i| {
                if (i > 0) try each.append(',');
                try each.writer().print("{d}", .{Model.tokens(item)});
            }
            return infoOf(allocator, "{{\"n_embedding\":{d},\"input_tokens_each\":[{s}]}}", .{ self.model.valuesEach(), each.items });
        }
    };
}

/// A fake's `info`: the host's JSON, formatted, parsed as nn.Backend parses it.
pub fn infoOf(allocator: std.mem.Allocator, comptime fmt: []const u8, args: anytype) (nn.Error || std.mem.Allocator.Error)!std.json.Parsed(nn.Info) {
    const json = try std.fmt.allocPrint(allocator, fmt, args);
    defer allocator.free(json);
    return nn.parseInfo(allocator, json);
}

/// A client that has gone: every write fails.
pub const FailingWriter = struct {
    pub fn writeAll(_: FailingWriter, _: []const u8) !void {
        return error.BrokenPipe;
    }
};

/// What a request run in a test wrote, and how it ended (its diagnostic on
/// error.InvalidRequest).
pub const Run = struct {
    out: std.ArrayList(u8),
    diag: Diagnostic = .{},
    result: anyerror!void = {},

    pub fn init() Run {
        return .{ .out = std.ArrayList(u8).init(testing.allocator) };
    }

    pub fn deinit(self: *Run) void {
        self.out.deinit();
    }

    /// The JSON body after the head.
    pub fn json(self: *const Run) !std.json.Parsed(std.json.Value) {
        return responseJson(self.out.items);
    }
};

/// The body of a WAGI response: what follows the head's blank line.
pub fn responseBody(out: []const u8) []const u8 {
    return out[std.mem.indexOf(u8, out, "\n\n").? + 2 ..];
}

/// The JSON body of a WAGI response.
pub fn responseJson(out: []const u8) !std.json.Parsed(std.json.Value) {
    return std.json.parseFromSlice(std.json.Value, testing.allocator, responseBody(out), .{});
}

pub fn contains(haystack: []const u8, needle: []const u8) bool {
    return std.mem.indexOf(u8, haystack, needle) != null;
}

/// That `text` holds `part`; it prints `text` when it does not.
pub fn expectContains(text: []const u8, part: []const u8) !void {
    if (contains(text, part)) return;
    std.debug.print("missing: {s}\nin: {s}\n", .{ part, text });
    return error.TestUnexpectedResult;
}

/// That `text` holds each of `parts`, in that order.
pub fn expectInOrder(text: []const u8, parts: []const []const u8) !void {
    var at: usize = 0;
    for (parts) |part| {
        const found = std.mem.indexOfPos(u8, text, at, part) orelse {
            std.debug.print("missing after {d}: {s}\nin: {s}\n", .{ at, part, text });
            return error.TestUnexpectedResult;
        };
        at = found + part.len;
    }
}

/// That `parse` (a request parser: allocator, body, diagnostic) refuses
/// `body` with `status`, naming `param` (null: none), in a message that
/// contains `message_part`.
pub fn expectInvalid(comptime parse: anytype, body: []const u8, status: u16, param: ?[]const u8, message_part: []const u8) !void {
    var diag = Diagnostic{};
    try testing.expectError(error.InvalidRequest, parse(testing.allocator, body, &diag));
    try testing.expectEqual(status, diag.err.status);
    if (param) |p| try testing.expectEqualStrings(p, diag.err.param.?) else try testing.expect(diag.err.param == null);
    try expectContains(diag.err.message, message_part);
}

/// A function tool from its JSON (`{"type":"function","function":{...}}`), in `arena`.
pub fn toolFrom(arena: std.mem.Allocator, json: []const u8) !templates.Tool {
    const value = try std.json.parseFromSliceLeaky(std.json.Value, arena, json, .{});
    const f = value.object.get("function").?.object;
    return .{ .name = f.get("name").?.string, .parameters = try std.json.stringifyAlloc(arena, f.get("parameters").?, .{}), .value = value };
}
