//! Thinking kept apart from the answer, as llama.cpp's server does with
//! `--reasoning-format auto`: a thinking model writes its monologue between
//! tags before its answer, and that monologue goes to `reasoning_content`
//! while `content` holds only the answer. The tags (`Syntax`):
//! - `<think>` ... `</think>`: DeepSeek-R1 distills, Qwen3, most others;
//! - Gemma 4's thought channel, `<|channel>thought\n` ... `<channel|>`. Its
//!   markers are control tokens, which the host writes into the text only
//!   because the app names them in `preserved-tokens` (`markers`).
//!
//! Which models think, and in which tags, is read from what the template and
//! the model do, never from a model's name:
//! - the rendered prompt is Gemma 4's (its turns are `<|turn>`...`<turn|>`):
//!   the channel's tags; otherwise `<think>`;
//! - the rendered prompt ends (after whitespace) with an opened block: the
//!   template opened it itself (DeepSeek-R1 distills, Qwen3 thinking models),
//!   so the output starts inside the reasoning and only the closing tag ends
//!   it. (Gemma 4's template opens none: with `enable_thinking` it starts the
//!   system turn with `<|think|>` and the model opens the channel; without, it
//!   ends the prompt with an empty, closed channel.)
//! - otherwise the output opens the block itself: the opening tag first, after
//!   optional whitespace (Qwen3 with its original template, Gemma 4). Anywhere
//!   else the tag is ordinary answer text.
//!
//! A block that never closes (the length limit hit mid-thought) is reasoning
//! to the end. Like llama.cpp, the reasoning is trimmed of surrounding
//! whitespace and the answer of the whitespace right after the closing tag.
//!
//! `Splitter` works on the raw bytes of tokens: a tag split across tokens is
//! held back until it is whole, and nothing else is held back but whitespace
//! that might end the reasoning. The tags are ASCII, so a split never cuts a
//! UTF-8 character; `Reasoner` adds the UTF-8 hold-back and repair for the
//! reasoning text (the answer goes on to the caller's stop-string filter).

const std = @import("std");
const stream = @import("stream.zig");

/// The tags a model writes its thinking between.
pub const Syntax = struct {
    open: []const u8,
    close: []const u8,
};

pub const think_tags = Syntax{ .open = "<think>", .close = "</think>" };
/// The channel's name is part of the opening tag; the newline after it is
/// leading whitespace of the reasoning.
pub const gemma4_channel = Syntax{ .open = "<|channel>thought", .close = "<channel|>" };

/// The markers of both syntaxes, for the host's `preserved-tokens`: in some
/// vocabularies they are control tokens, left out of the text unless named.
pub const markers = [_][]const u8{ "<think>", "</think>", "<|channel>", "<channel|>" };

/// How a completion's output starts: the tags it thinks in, and whether the
/// prompt already opened the block.
pub const Start = struct {
    syntax: Syntax = think_tags,
    opened: bool = false,
};

/// `--reasoning-format` (env LLAMAEDGE_REASONING_FORMAT): `auto` splits the
/// thinking out, `none` leaves the model's text as it is, inline in `content`.
pub const Format = enum {
    none,
    auto,

    pub fn parse(text: []const u8) ?Format {
        return std.meta.stringToEnum(Format, text);
    }
};

/// How the output of `prompt` starts: Gemma 4's channel when the prompt is
/// Gemma 4's (turns opened with `<|turn>`), else `<think>`; opened when the
/// prompt ends, after whitespace, with the opening tag.
pub fn startOf(prompt: []const u8) Start {
    const syntax = if (std.mem.indexOf(u8, prompt, "<|turn>") != null) gemma4_channel else think_tags;
    return .{ .syntax = syntax, .opened = std.mem.endsWith(u8, std.mem.trimRight(u8, prompt, &std.ascii.whitespace), syntax.open) };
}

/// What one push releases. The slices stay valid until the next call.
pub const Parts = struct {
    reasoning: []const u8,
    content: []const u8,
};

pub const Splitter = struct {
    allocator: std.mem.Allocator,
    syntax: Syntax,
    /// The template opened the block: no tag is needed to start reasoning.
    opened: bool,
    phase: Phase = .start,
    /// Some reasoning was released (so later whitespace is inside it, not leading).
    thought: bool = false,
    pending: std.ArrayListUnmanaged(u8) = .empty,
    reasoning: std.ArrayListUnmanaged(u8) = .empty,
    content: std.ArrayListUnmanaged(u8) = .empty,

    const Phase = enum {
        /// Before anything but whitespace: an opening tag may still come.
        start,
        /// Inside the think block.
        thinking,
        /// Right after the closing tag: whitespace here is dropped.
        closed,
        /// The answer: everything passes.
        answer,
    };

    pub fn init(allocator: std.mem.Allocator, start: Start) Splitter {
        return .{ .allocator = allocator, .syntax = start.syntax, .opened = start.opened };
    }

    pub fn deinit(self: *Splitter) void {
        self.pending.deinit(self.allocator);
        self.reasoning.deinit(self.allocator);
        self.content.deinit(self.allocator);
    }

    /// Whether the text is still inside the reasoning (or may be).
    pub fn inReasoning(self: *const Splitter) bool {
        return self.phase == .thinking or (self.phase == .start and self.opened);
    }

    /// Adds the bytes of one token; returns what is known to be reasoning and
    /// answer now.
    pub fn push(self: *Splitter, bytes: []const u8) !Parts {
        self.clearOutput();
        try self.pending.appendSlice(self.allocator, bytes);
        try self.advance(false);
        return self.parts();
    }

    /// The generation ended: releases what was held back.
    pub fn finish(self: *Splitter) !Parts {
        self.clearOutput();
        try self.advance(true);
        return self.parts();
    }

    fn advance(self: *Splitter, at_end: bool) !void {
        while (true) switch (self.phase) {
            .start => {
                const text = self.pending.items;
                const spaces = leadingSpaces(text);
                const rest = text[spaces..];
                const open = self.syntax.open;
                if (std.mem.startsWith(u8, rest, open)) {
                    self.consume(spaces + open.len);
                    self.phase = .thinking;
                    continue;
                }
                // Nothing but whitespace and maybe the start of a tag yet.
                if (!at_end and std.mem.startsWith(u8, open, rest)) return;
                if (self.opened) {
                    self.consume(spaces);
                    self.phase = .thinking;
                } else {
                    self.phase = .answer;
                }
            },
            .thinking => {
                if (!self.thought) self.consume(leadingSpaces(self.pending.items));
                const text = self.pending.items;
                const close = self.syntax.close;
                if (std.mem.indexOf(u8, text, close)) |at| {
                    try self.think(std.mem.trimRight(u8, text[0..at], &std.ascii.whitespace));
                    self.consume(at + close.len);
                    self.phase = .closed;
                    continue;
                }
                if (at_end) {
                    try self.think(std.mem.trimRight(u8, text, &std.ascii.whitespace));
                    self.consume(text.len);
                    return;
                }
                // Hold back a tail that may begin the closing tag, and the
                // whitespace before it, which would then be trailing.
                var keep = partialTagLen(text, close);
                while (keep < text.len and std.ascii.isWhitespace(text[text.len - keep - 1])) keep += 1;
                try self.think(text[0 .. text.len - keep]);
                self.consume(text.len - keep);
                return;
            },
            .closed => {
                self.consume(leadingSpaces(self.pending.items));
                if (self.pending.items.len == 0) return;
                self.phase = .answer;
            },
            .answer => {
                try self.content.appendSlice(self.allocator, self.pending.items);
                self.pending.clearRetainingCapacity();
                return;
            },
        };
    }

    fn think(self: *Splitter, text: []const u8) !void {
        if (text.len == 0) return;
        try self.reasoning.appendSlice(self.allocator, text);
        self.thought = true;
    }

    fn consume(self: *Splitter, len: usize) void {
        const rest = self.pending.items.len - len;
        std.mem.copyForwards(u8, self.pending.items[0..rest], self.pending.items[len..]);
        self.pending.shrinkRetainingCapacity(rest);
    }

    fn clearOutput(self: *Splitter) void {
        self.reasoning.clearRetainingCapacity();
        self.content.clearRetainingCapacity();
    }

    fn parts(self: *const Splitter) Parts {
        return .{ .reasoning = self.reasoning.items, .content = self.content.items };
    }
};

/// The splitter with the reasoning made safe to send: whole UTF-8 characters
/// only, invalid bytes as U+FFFD. The answer comes out raw, for the caller's
/// stop-string filter (stop strings apply to the answer, not to the thinking).
pub const Reasoner = struct {
    splitter: Splitter,
    text: stream.TextFilter,
    /// The reasoning released by the last call (both filter calls at the end).
    released: std.ArrayListUnmanaged(u8) = .empty,

    pub fn init(allocator: std.mem.Allocator, start: Start) Reasoner {
        return .{ .splitter = Splitter.init(allocator, start), .text = stream.TextFilter.init(allocator, &.{}) };
    }

    pub fn deinit(self: *Reasoner) void {
        self.splitter.deinit();
        self.text.deinit();
        self.released.deinit(self.splitter.allocator);
    }

    pub fn push(self: *Reasoner, bytes: []const u8) !Parts {
        const split = try self.splitter.push(bytes);
        return .{ .reasoning = try self.text.push(split.reasoning), .content = split.content };
    }

    pub fn finish(self: *Reasoner) !Parts {
        const split = try self.splitter.finish();
        self.released.clearRetainingCapacity();
        try self.released.appendSlice(self.splitter.allocator, try self.text.push(split.reasoning));
        try self.released.appendSlice(self.splitter.allocator, try self.text.finish());
        return .{ .reasoning = self.released.items, .content = split.content };
    }
};

fn leadingSpaces(text: []const u8) usize {
    var n: usize = 0;
    while (n < text.len and std.ascii.isWhitespace(text[n])) n += 1;
    return n;
}

/// Length of the longest tail of `text` that is a proper prefix of `tag`.
fn partialTagLen(text: []const u8, tag: []const u8) usize {
    var len = @min(tag.len - 1, text.len);
    while (len > 0) : (len -= 1) {
        if (std.mem.eql(u8, text[text.len - len ..], tag[0..len])) return len;
    }
    return 0;
}

// ---------------------------------------------------------------------------

const testing = std.testing;

const Whole = struct {
    reasoning: std.ArrayList(u8),
    content: std.ArrayList(u8),

    fn deinit(self: *Whole) void {
        self.reasoning.deinit();
        self.content.deinit();
    }
};

/// Feeds `pieces` one push each and gathers everything released.
fn collect(start: Start, pieces: []const []const u8) !Whole {
    var splitter = Splitter.init(testing.allocator, start);
    defer splitter.deinit();
    var whole = Whole{ .reasoning = std.ArrayList(u8).init(testing.allocator), .content = std.ArrayList(u8).init(testing.allocator) };
    errdefer whole.deinit();
    for (pieces) |piece| {
        const parts = try splitter.push(piece);
        try whole.reasoning.appendSlice(parts.reasoning);
        try whole.content.appendSlice(parts.content);
    }
    const parts = try splitter.finish();
    try whole.reasoning.appendSlice(parts.reasoning);
    try whole.content.appendSlice(parts.content);
    return whole;
}

/// Splits `text` at every position, at every pair of positions, and byte by
/// byte: each way of cutting it into tokens gives the same reasoning and answer.
fn expectSplit(opened: bool, text: []const u8, reasoning: []const u8, content: []const u8) !void {
    try expectSplitFrom(.{ .opened = opened }, text, reasoning, content);
}

fn expectSplitFrom(start: Start, text: []const u8, reasoning: []const u8, content: []const u8) !void {
    try expectCollected(start, &.{text}, reasoning, content);
    for (0..text.len + 1) |i| {
        for (i..text.len + 1) |j| {
            try expectCollected(start, &.{ text[0..i], text[i..j], text[j..] }, reasoning, content);
        }
    }
    var bytes = std.ArrayList([]const u8).init(testing.allocator);
    defer bytes.deinit();
    for (0..text.len) |i| try bytes.append(text[i .. i + 1]);
    try expectCollected(start, bytes.items, reasoning, content);
}

/// `tokens`, pushed in turn, give `reasoning` and `content`.
fn expectCollected(start: Start, tokens: []const []const u8, reasoning: []const u8, content: []const u8) !void {
    var whole = try collect(start, tokens);
    defer whole.deinit();
    try testing.expectEqualStrings(reasoning, whole.reasoning.items);
    try testing.expectEqualStrings(content, whole.content.items);
}

test "a think block the output opens goes to reasoning, the rest to content" {
    try expectSplit(false, "<think>\nLet me add 2 and 2.\n</think>\n\nThe answer is 4.", "Let me add 2 and 2.", "The answer is 4.");
}

test "whitespace before the opening tag is allowed" {
    try expectSplit(false, "\n <think>hmm</think>ok", "hmm", "ok");
}

test "a template that opened the block: the output starts in reasoning" {
    try expectSplit(true, "\nThe user greets me.\n</think>\n\nHello!", "The user greets me.", "Hello!");
}

test "a template that opened the block, and the model repeats the tag" {
    try expectSplit(true, "<think>\nhmm\n</think>\nok", "hmm", "ok");
}

test "a block never closed is all reasoning" {
    try expectSplit(false, "<think>\nStill thinking about <b>this</b> and </thi", "Still thinking about <b>this</b> and </thi", "");
    try expectSplit(true, "thinking, cut off mid-thought  \n", "thinking, cut off mid-thought", "");
}

test "without a think block everything is content, leading whitespace kept" {
    try expectSplit(false, "\n  Hello <think>not a tag here</think>", "", "\n  Hello <think>not a tag here</think>");
    try expectSplit(false, "<thin", "", "<thin");
    try expectSplit(false, " \n", "", " \n");
}

test "an empty think block gives no reasoning" {
    try expectSplit(false, "<think>\n\n</think>\n\nAnswer.", "", "Answer.");
    try expectSplit(true, "</think>Answer.", "", "Answer.");
}

test "only the first closing tag ends the reasoning" {
    try expectSplit(true, "a</think>b</think>c", "a", "b</think>c");
}

test "whitespace inside the reasoning and after the answer's start is kept" {
    try expectSplit(true, "line one\n\nline two \n</think>\n\nanswer\n\n", "line one\n\nline two", "answer\n\n");
}

test "reasoning is released as it comes, holding back only a possible tag" {
    var splitter = Splitter.init(testing.allocator, .{ .opened = true });
    defer splitter.deinit();
    var parts = try splitter.push("Hello wor");
    try testing.expectEqualStrings("Hello wor", parts.reasoning);
    parts = try splitter.push("ld </th");
    try testing.expectEqualStrings("ld", parts.reasoning);
    try testing.expect(splitter.inReasoning());
    parts = try splitter.push("ought");
    // "</th" was not the tag after all: it and the space before it are reasoning
    try testing.expectEqualStrings(" </thought", parts.reasoning);
    parts = try splitter.push("</think>\nHi");
    try testing.expectEqualStrings("", parts.reasoning);
    try testing.expectEqualStrings("Hi", parts.content);
    try testing.expect(!splitter.inReasoning());
    parts = try splitter.push(" there");
    try testing.expectEqualStrings(" there", parts.content);
    parts = try splitter.finish();
    try testing.expectEqualStrings("", parts.content);
}

test "the answer is not held back when the output has no think block" {
    var splitter = Splitter.init(testing.allocator, .{});
    defer splitter.deinit();
    try testing.expectEqualStrings("", (try splitter.push("<th")).content);
    try testing.expectEqualStrings("<the cat", (try splitter.push("e cat")).content);
    try testing.expectEqualStrings("</think>", (try splitter.push("</think>")).content);
}

test "the reasoner repairs UTF-8 in the reasoning and passes the answer raw" {
    var reasoner = Reasoner.init(testing.allocator, .{ .opened = true });
    defer reasoner.deinit();
    // "é" is C3 A9, split across tokens inside the reasoning
    var parts = try reasoner.push("caf\xC3");
    try testing.expectEqualStrings("caf", parts.reasoning);
    parts = try reasoner.push("\xA9\xFF</think>ans\xC3");
    try testing.expectEqualStrings("é\u{FFFD}", parts.reasoning);
    try testing.expectEqualStrings("ans\xC3", parts.content);
    parts = try reasoner.finish();
    try testing.expectEqualStrings("", parts.reasoning);
}

test "the reasoner releases a cut-off character at the end" {
    var reasoner = Reasoner.init(testing.allocator, .{ .opened = true });
    defer reasoner.deinit();
    try testing.expectEqualStrings("abc", (try reasoner.push("abc\xE2\x82")).reasoning);
    const parts = try reasoner.finish();
    try testing.expectEqualStrings("\u{FFFD}\u{FFFD}", parts.reasoning);
}

test "startOf: the opened block and the tags, from the prompt" {
    try testing.expect(startOf("<|im_start|>assistant\n<think>\n").opened);
    try testing.expect(startOf("<｜Assistant｜><think>").opened);
    try testing.expect(!startOf("<|im_start|>assistant\n<think>\n\n</think>\n\n").opened);
    try testing.expect(!startOf("<|im_start|>assistant\n").opened);
    try testing.expect(!startOf("").opened);
    try testing.expectEqualStrings("<think>", startOf("<|im_start|>assistant\n").syntax.open);
    // Gemma 4's template, thinking on (the model opens the channel) and off (closed, empty)
    const on = startOf("<bos><|turn>system\n<|think|><turn|>\n<|turn>user\nhi<turn|>\n<|turn>model\n");
    try testing.expectEqualStrings("<|channel>thought", on.syntax.open);
    try testing.expectEqualStrings("<channel|>", on.syntax.close);
    try testing.expect(!on.opened);
    const off = startOf("<bos><|turn>user\nhi<turn|>\n<|turn>model\n<|channel>thought\n<channel|>");
    try testing.expectEqualStrings("<|channel>thought", off.syntax.open);
    try testing.expect(!off.opened);
    // a template that leaves the channel open
    try testing.expect(startOf("<|turn>user\nhi<turn|>\n<|turn>model\n<|channel>thought\n").opened);
}

const gemma = Start{ .syntax = gemma4_channel };

test "Gemma 4's thought channel goes to reasoning, the rest to content, cut anywhere" {
    try expectSplitFrom(gemma, "<|channel>thought\nThe user greets me.\n<channel|>Hello!", "The user greets me.", "Hello!");
    try expectSplitFrom(gemma, "\n<|channel>thought\n<channel|>\n\nHello!", "", "Hello!");
    // the call after the thought is the answer's, for the tools reader
    try expectSplitFrom(gemma, "<|channel>thought\nCall it.<channel|><|tool_call>call:f{a:1}<tool_call|>", "Call it.", "<|tool_call>call:f{a:1}<tool_call|>");
    // `<think>` means nothing to Gemma 4, and the channel nothing to `<think>` models
    try expectSplitFrom(gemma, "<think>x</think>y", "", "<think>x</think>y");
    try expectSplit(false, "<|channel>thought\nx<channel|>y", "", "<|channel>thought\nx<channel|>y");
    // another channel is not the thought
    try expectSplitFrom(gemma, "<|channel>final\nHi", "", "<|channel>final\nHi");
}

test "an unclosed Gemma 4 channel (cut off mid-thought) is all reasoning" {
    try expectSplitFrom(gemma, "<|channel>thought\nStill <b>thinking</b> <chan", "Still <b>thinking</b> <chan", "");
    try expectSplitFrom(gemma, "<|channel>thou", "", "<|channel>thou");
    try expectSplitFrom(.{ .syntax = gemma4_channel, .opened = true }, "\nthinking on\n", "thinking on", "");
}

test "a template-opened Gemma 4 channel: the output starts in reasoning" {
    try expectSplitFrom(.{ .syntax = gemma4_channel, .opened = true }, "Hmm.\n<channel|>\nAnswer.", "Hmm.", "Answer.");
}

test "the Gemma 4 reasoner holds back only a possible closing tag" {
    var reasoner = Reasoner.init(testing.allocator, gemma);
    defer reasoner.deinit();
    try testing.expectEqualStrings("", (try reasoner.push("<|channel>")).reasoning);
    try testing.expectEqualStrings("", (try reasoner.push("thought\n")).reasoning);
    try testing.expect(reasoner.splitter.inReasoning());
    try testing.expectEqualStrings("Let me", (try reasoner.push("Let me <chan")).reasoning);
    const parts = try reasoner.push("nel|>Hi");
    try testing.expectEqualStrings("", parts.reasoning);
    try testing.expectEqualStrings("Hi", parts.content);
    try testing.expect(!reasoner.splitter.inReasoning());
}

test "Format.parse" {
    try testing.expectEqual(Format.auto, Format.parse("auto").?);
    try testing.expectEqual(Format.none, Format.parse("none").?);
    try testing.expect(Format.parse("deepseek") == null);
}
