//! The token loop every generating route shares (the chat path, and
//! /v1/completions): counts tokens (the reasoning's too), enforces the
//! limit, splits the thinking from the answer, and filters the answer's text
//! (whole UTF-8 characters, stop strings held back and never sent).

const std = @import("std");
const shared = @import("shared");

const stream = shared.stream;
const reasoning = shared.reasoning;

/// Why a choice ended, as the APIs report it (`finish_reason`).
pub const Finish = enum { stop, length, tool_calls };

/// One choice's token loop.
pub const Generation = struct {
    filter: stream.TextFilter,
    n_predict: u32,
    tokens: u32 = 0,
    finish_reason: ?Finish = null,
    /// The last step generated a token (rather than ending).
    last_was_token: bool = false,
    /// Ahead of the stop-string filter: stop strings apply to the answer only.
    thinking: ?reasoning.Reasoner = null,
    /// The reasoning text the last step released (maybe empty).
    reasoning_text: []const u8 = "",
    /// The answer's last text when the generation ends (two filter calls).
    tail: std.ArrayListUnmanaged(u8) = .empty,

    pub fn init(allocator: std.mem.Allocator, stops: []const []const u8, n_predict: u32) Generation {
        return .{ .filter = stream.TextFilter.init(allocator, stops), .n_predict = n_predict };
    }

    pub fn deinit(self: *Generation) void {
        self.filter.deinit();
        if (self.thinking) |*t| t.deinit();
        self.tail.deinit(self.filter.allocator);
    }

    /// Splits reasoning out of the text (chat/prompt.zig's Prepared.thinking: the tags, and
    /// whether the prompt opened the block; null leaves the text as it is).
    pub fn splitThinking(self: *Generation, start: ?reasoning.Start) void {
        if (start) |s| self.thinking = reasoning.Reasoner.init(self.filter.allocator, s);
    }

    /// Generates one token and returns the answer text it releases (maybe
    /// empty; its reasoning is in reasoning_text). Sets finish_reason when the
    /// completion is over.
    pub fn step(self: *Generation, backend: anytype) ![]const u8 {
        self.last_was_token = false;
        self.reasoning_text = "";
        // The app enforces the limit itself: a host need not honour n-predict.
        if (self.tokens >= self.n_predict) return self.end(.length);
        switch (try backend.next()) {
            .end => |reason| return self.end(switch (reason) {
                .stop => .stop,
                .length => .length,
            }),
            .token => |bytes| {
                self.tokens += 1;
                self.last_was_token = true;
                var answer = bytes;
                if (self.thinking) |*t| {
                    const parts = try t.push(bytes);
                    self.reasoning_text = parts.reasoning;
                    answer = parts.content;
                }
                const text = try self.filter.push(answer);
                if (self.filter.stopped) self.finish_reason = .stop;
                return text;
            },
        }
    }

    fn end(self: *Generation, reason: Finish) ![]const u8 {
        self.finish_reason = reason;
        const t = if (self.thinking) |*t| t else return self.filter.finish();
        const parts = try t.finish();
        self.reasoning_text = parts.reasoning;
        self.tail.clearRetainingCapacity();
        try self.tail.appendSlice(self.filter.allocator, try self.filter.push(parts.content));
        if (self.filter.stopped) self.finish_reason = .stop;
        try self.tail.appendSlice(self.filter.allocator, try self.filter.finish());
        return self.tail.items;
    }
};
