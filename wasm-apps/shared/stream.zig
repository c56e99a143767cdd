//! Turns the raw bytes of generated tokens into text that is safe to send.
//!
//! A token may end in the middle of a UTF-8 character, and a stop string may
//! span several tokens. `TextFilter` holds back exactly the bytes that could
//! still change meaning: an incomplete UTF-8 sequence at the end, and a tail
//! that could be the start of a stop string. Text it releases is always valid
//! UTF-8 (invalid bytes become U+FFFD) and never contains a stop string.

const std = @import("std");

const replacement_char = "\u{FFFD}";

pub const TextFilter = struct {
    allocator: std.mem.Allocator,
    stops: []const []const u8,
    pending: std.ArrayListUnmanaged(u8) = .empty,
    released: std.ArrayListUnmanaged(u8) = .empty,
    stopped: bool = false,
    /// The stop string that was seen.
    matched: ?[]const u8 = null,

    pub fn init(allocator: std.mem.Allocator, stops: []const []const u8) TextFilter {
        return .{ .allocator = allocator, .stops = stops };
    }

    pub fn deinit(self: *TextFilter) void {
        self.pending.deinit(self.allocator);
        self.released.deinit(self.allocator);
    }

    /// Adds the bytes of one token and returns the text that can be sent now.
    /// The slice stays valid until the next call. Once a stop string has been
    /// seen (`stopped`), everything else is dropped.
    pub fn push(self: *TextFilter, bytes: []const u8) ![]const u8 {
        self.released.clearRetainingCapacity();
        if (self.stopped) return self.released.items;
        try self.pending.appendSlice(self.allocator, bytes);

        if (self.findStop()) |found| {
            const stop_at = found.at;
            self.matched = found.stop;
            try self.release(stop_at);
            self.stopped = true;
            self.pending.clearRetainingCapacity();
            return self.released.items;
        }
        const keep = @max(self.stopPrefixLen(), incompleteTailLen(self.pending.items));
        try self.release(self.pending.items.len - keep);
        return self.released.items;
    }

    /// The generation ended: release what was held back (it did not become a
    /// stop string; an unfinished character becomes U+FFFD).
    pub fn finish(self: *TextFilter) ![]const u8 {
        self.released.clearRetainingCapacity();
        if (self.stopped) return self.released.items;
        try self.release(self.pending.items.len);
        return self.released.items;
    }

    fn findStop(self: *const TextFilter) ?struct { at: usize, stop: []const u8 } {
        var first: ?usize = null;
        var which: []const u8 = "";
        for (self.stops) |stop| {
            if (stop.len == 0) continue;
            if (std.mem.indexOf(u8, self.pending.items, stop)) |at| {
                if (first == null or at < first.?) {
                    first = at;
                    which = stop;
                }
            }
        }
        return if (first) |at| .{ .at = at, .stop = which } else null;
    }

    /// Length of the longest tail of `pending` that is a proper prefix of a stop string.
    fn stopPrefixLen(self: *const TextFilter) usize {
        const text = self.pending.items;
        var longest: usize = 0;
        for (self.stops) |stop| {
            if (stop.len < 2) continue;
            var len = @min(stop.len - 1, text.len);
            while (len > longest) : (len -= 1) {
                if (std.mem.eql(u8, text[text.len - len ..], stop[0..len])) {
                    longest = len;
                    break;
                }
            }
        }
        return longest;
    }

    /// Moves the first `len` pending bytes to `released`, repairing invalid UTF-8.
    fn release(self: *TextFilter, len: usize) !void {
        try appendSanitized(self.allocator, &self.released, self.pending.items[0..len]);
        const rest = self.pending.items.len - len;
        std.mem.copyForwards(u8, self.pending.items[0..rest], self.pending.items[len..]);
        self.pending.shrinkRetainingCapacity(rest);
    }
};

/// Number of bytes at the end of `text` that begin a UTF-8 sequence which is
/// not finished yet (0 when the text ends on a character boundary or the tail
/// is invalid anyway).
pub fn incompleteTailLen(text: []const u8) usize {
    const window = @min(text.len, 3);
    var back: usize = 1;
    while (back <= window) : (back += 1) {
        const byte = text[text.len - back];
        if (byte & 0xC0 == 0x80) continue; // continuation byte: keep looking for the lead
        const need = std.unicode.utf8ByteSequenceLength(byte) catch return 0;
        return if (need > back) back else 0;
    }
    return 0;
}

/// Appends `bytes` to `out`, each invalid byte replaced by U+FFFD, so that the
/// text can always be encoded as a JSON string.
pub fn appendSanitized(allocator: std.mem.Allocator, out: *std.ArrayListUnmanaged(u8), bytes: []const u8) !void {
    var i: usize = 0;
    while (i < bytes.len) {
        const len = std.unicode.utf8ByteSequenceLength(bytes[i]) catch {
            try out.appendSlice(allocator, replacement_char);
            i += 1;
            continue;
        };
        if (i + len <= bytes.len) {
            if (std.unicode.utf8Decode(bytes[i .. i + len])) |_| {
                try out.appendSlice(allocator, bytes[i .. i + len]);
                i += len;
                continue;
            } else |_| {}
        }
        try out.appendSlice(allocator, replacement_char);
        i += 1;
    }
}

fn collect(filter: *TextFilter, pieces: []const []const u8, all: *std.ArrayList(u8)) !void {
    for (pieces) |piece| try all.appendSlice(try filter.push(piece));
    try all.appendSlice(try filter.finish());
}

test "a character split across tokens is held back until whole" {
    var filter = TextFilter.init(std.testing.allocator, &.{});
    defer filter.deinit();
    // "é" is C3 A9, "😀" is F0 9F 98 80
    try std.testing.expectEqualStrings("caf", try filter.push("caf\xC3"));
    try std.testing.expectEqualStrings("é ", try filter.push("\xA9 \xF0\x9F"));
    try std.testing.expectEqualStrings("", try filter.push("\x98"));
    try std.testing.expectEqualStrings("😀", try filter.push("\x80"));
    try std.testing.expectEqualStrings("", try filter.finish());
}

test "invalid bytes become U+FFFD and an unfinished tail is replaced at the end" {
    var filter = TextFilter.init(std.testing.allocator, &.{});
    defer filter.deinit();
    try std.testing.expectEqualStrings("a\u{FFFD}b", try filter.push("a\xFFb"));
    try std.testing.expectEqualStrings("", try filter.push("\xE2\x82"));
    try std.testing.expectEqualStrings("\u{FFFD}\u{FFFD}", try filter.finish());
}

test "a stop string split across tokens is never emitted" {
    var filter = TextFilter.init(std.testing.allocator, &.{ "STOP", "\n\nUser:" });
    defer filter.deinit();
    var all = std.ArrayList(u8).init(std.testing.allocator);
    defer all.deinit();
    try collect(&filter, &.{ "Hello S", "T", "OP and more" }, &all);
    try std.testing.expectEqualStrings("Hello ", all.items);
    try std.testing.expect(filter.stopped);
    try std.testing.expectEqualStrings("STOP", filter.matched.?);
}

test "text that only looked like a stop string is released" {
    var filter = TextFilter.init(std.testing.allocator, &.{"STOP"});
    defer filter.deinit();
    try std.testing.expectEqualStrings("Hello ", try filter.push("Hello ST"));
    try std.testing.expectEqualStrings("STAY", try filter.push("AY"));
    try std.testing.expectEqualStrings("", try filter.push("S"));
    try std.testing.expectEqualStrings("S", try filter.finish());
    try std.testing.expect(!filter.stopped);
}

test "the earliest of several stop strings wins" {
    var filter = TextFilter.init(std.testing.allocator, &.{ "c", "ab" });
    defer filter.deinit();
    try std.testing.expectEqualStrings("x", try filter.push("xabc"));
    try std.testing.expect(filter.stopped);
    try std.testing.expectEqualStrings("", try filter.push("more"));
}

test "incompleteTailLen" {
    try std.testing.expectEqual(@as(usize, 0), incompleteTailLen(""));
    try std.testing.expectEqual(@as(usize, 0), incompleteTailLen("abc"));
    try std.testing.expectEqual(@as(usize, 1), incompleteTailLen("a\xC3"));
    try std.testing.expectEqual(@as(usize, 0), incompleteTailLen("a\xC3\xA9"));
    try std.testing.expectEqual(@as(usize, 3), incompleteTailLen("\xF0\x9F\x98"));
    try std.testing.expectEqual(@as(usize, 0), incompleteTailLen("\x80\x80\x80"));
}
