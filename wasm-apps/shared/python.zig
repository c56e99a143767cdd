//! Text as the reference chat templates' Python writes it: JSON as
//! `json.dumps(..., ensure_ascii=False)` (Jinja's `tojson` in Hugging Face
//! templates) and `str.strip()` (Jinja's `trim`). The named templates use it
//! to render byte for byte what their reference renders.

const std = @import("std");

/// JSON as Python's `json.dumps(value, ensure_ascii=False, indent=indent)`
/// writes it (what Hugging Face chat templates' `tojson` gives): `", "` and
/// `": "` separators, or `","` and newlines with `indent`; keys in order.
pub fn writePyJson(w: anytype, value: std.json.Value, indent: ?u8, level: usize) !void {
    switch (value) {
        .null => try w.writeAll("null"),
        .bool => |b| try w.writeAll(if (b) "true" else "false"),
        .integer => |i| try w.print("{d}", .{i}),
        .float => |f| {
            var buf: [64]u8 = undefined;
            const text = std.fmt.bufPrint(&buf, "{d}", .{f}) catch "0.0";
            try w.writeAll(text);
            if (std.mem.indexOfAny(u8, text, ".eEn") == null) try w.writeAll(".0");
        },
        .number_string => |s| try w.writeAll(s),
        .string => |s| try writePyString(w, s),
        .array => |a| {
            if (a.items.len == 0) return w.writeAll("[]");
            try w.writeByte('[');
            for (a.items, 0..) |item, i| {
                try pySeparator(w, i, indent, level + 1);
                try writePyJson(w, item, indent, level + 1);
            }
            try pyClose(w, indent, level);
            try w.writeByte(']');
        },
        .object => |o| {
            if (o.count() == 0) return w.writeAll("{}");
            try w.writeByte('{');
            var it = o.iterator();
            var i: usize = 0;
            while (it.next()) |entry| : (i += 1) {
                try pySeparator(w, i, indent, level + 1);
                try writePyString(w, entry.key_ptr.*);
                try w.writeAll(": ");
                try writePyJson(w, entry.value_ptr.*, indent, level + 1);
            }
            try pyClose(w, indent, level);
            try w.writeByte('}');
        },
    }
}

fn pySeparator(w: anytype, i: usize, indent: ?u8, level: usize) !void {
    if (indent) |n| {
        if (i > 0) try w.writeByte(',');
        try w.writeByte('\n');
        try w.writeByteNTimes(' ', n * level);
    } else if (i > 0) try w.writeAll(", ");
}

fn pyClose(w: anytype, indent: ?u8, level: usize) !void {
    if (indent) |n| {
        try w.writeByte('\n');
        try w.writeByteNTimes(' ', n * level);
    }
}

/// A JSON string as Python writes it with ensure_ascii=False.
pub fn writePyString(w: anytype, s: []const u8) !void {
    try w.writeByte('"');
    for (s) |c| switch (c) {
        '"' => try w.writeAll("\\\""),
        '\\' => try w.writeAll("\\\\"),
        '\n' => try w.writeAll("\\n"),
        '\r' => try w.writeAll("\\r"),
        '\t' => try w.writeAll("\\t"),
        0x08 => try w.writeAll("\\b"),
        0x0C => try w.writeAll("\\f"),
        0...0x07, 0x0B, 0x0E...0x1F => try w.print("\\u{x:0>4}", .{c}),
        else => try w.writeByte(c),
    };
    try w.writeByte('"');
}

/// Python's `str.strip()` (used by Jinja's `trim` filter and by `.strip()` in
/// the reference templates): removes Unicode whitespace at both ends.
pub fn pyStrip(text: []const u8) []const u8 {
    var start: usize = 0;
    while (start < text.len) {
        const len = spaceLenAt(text, start);
        if (len == 0) break;
        start += len;
    }
    var end = text.len;
    while (end > start) {
        const len = spaceLenBefore(text[start..end]);
        if (len == 0) break;
        end -= len;
    }
    return text[start..end];
}

fn isPySpace(cp: u21) bool {
    return switch (cp) {
        0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 => true,
        else => false,
    };
}

fn spaceLenAt(text: []const u8, at: usize) usize {
    const len = std.unicode.utf8ByteSequenceLength(text[at]) catch return 0;
    if (at + len > text.len) return 0;
    const cp = std.unicode.utf8Decode(text[at .. at + len]) catch return 0;
    return if (isPySpace(cp)) len else 0;
}

fn spaceLenBefore(text: []const u8) usize {
    var back: usize = 1;
    while (back <= @min(4, text.len)) : (back += 1) {
        const at = text.len - back;
        if (text[at] & 0xC0 == 0x80) continue;
        return if (spaceLenAt(text, at) == back) back else 0;
    }
    return 0;
}

test "pyStrip removes Unicode whitespace like Python" {
    try std.testing.expectEqualStrings("a b", pyStrip(" \t\na b\r\n"));
    try std.testing.expectEqualStrings("x", pyStrip("\u{3000}\u{A0}x\u{2009}"));
    try std.testing.expectEqualStrings("", pyStrip(" \n "));
    try std.testing.expectEqualStrings("é", pyStrip("é"));
}
