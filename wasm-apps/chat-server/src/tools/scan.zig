//! Function calling, reading calls: the scanner every format's reader uses
//! (JSON call objects and lists, in text that may be cut off), and the
//! low-level scanning of JSON text.

const std = @import("std");
const Tool = @import("shared").templates.Tool;

/// A call found in the text. While the text is incomplete, `name` may still
/// be null and `arguments` a prefix of the final arguments.
pub const Call = struct {
    name: ?[]const u8 = null,
    /// An id the model wrote itself (Mistral).
    id: ?[]const u8 = null,
    /// The arguments' JSON text (decoded when the model wrote them as a string).
    arguments: []const u8 = "",
    /// The arguments came as a JSON string: known only once whole.
    arguments_quoted: bool = false,
    complete: bool = false,
};

/// What the readers of every format share: the text, what is read of it so
/// far (content and calls), and reading one JSON call or list of calls.
pub const Scanner = struct {
    arena: std.mem.Allocator,
    text: []const u8,
    final: bool,
    tools: []const Tool = &.{},
    content: std.ArrayList(u8),
    calls: std.ArrayList(Call),

    pub const Stop = error{ Incomplete, Invalid, OutOfMemory };

    /// Past a call's closing marker at `i` (after whitespace). A missing one is
    /// forgiven; the start of one at the end of unfinished text is Incomplete.
    pub fn closing(s: *Scanner, i: usize, marker: []const u8) Stop!usize {
        const at = skipWs(s.text, i);
        const rest = s.text[at..];
        if (std.mem.startsWith(u8, rest, marker)) return at + marker.len;
        if (!s.final and std.mem.startsWith(u8, marker, rest)) return error.Incomplete;
        return at;
    }

    /// The leading JSON turned out not to be a call: it is all content.
    pub fn notACall(s: *Scanner, err: Stop) Stop!void {
        if (err == error.Invalid and s.calls.items.len == 0) {
            s.content.clearRetainingCapacity();
            try s.content.appendSlice(s.text);
            return;
        }
        return err;
    }

    /// Text after the last call; before the end, a tail that may begin
    /// `marker` is held back.
    pub fn plain(s: *Scanner, from: usize, marker: []const u8) Stop!void {
        const rest = s.text[@min(from, s.text.len)..];
        var keep: usize = 0;
        if (!s.final) {
            var len = @min(marker.len -| 1, rest.len);
            while (len > 0) : (len -= 1) {
                if (std.mem.endsWith(u8, rest, marker[0..len])) break;
            }
            keep = len;
        }
        try s.content.appendSlice(rest[0 .. rest.len - keep]);
    }

    /// `[` call, call, ... `]`; returns the index after it.
    pub fn callList(s: *Scanner, start: usize) Stop!usize {
        var i = skipWs(s.text, start);
        if (i == s.text.len) return error.Incomplete;
        if (s.text[i] != '[') return error.Invalid;
        i += 1;
        while (true) {
            i = skipWs(s.text, i);
            if (i == s.text.len) return error.Incomplete;
            switch (s.text[i]) {
                ']' => return i + 1,
                ',' => i += 1,
                '{' => i = try s.callObject(i),
                else => return error.Invalid,
            }
        }
    }

    /// One `{"name": .., "arguments"|"parameters": .., "id": ..}` object;
    /// the call is recorded as soon as it begins. Returns the index after it.
    pub fn callObject(s: *Scanner, start: usize) Stop!usize {
        return s.readCallWith(start, readCall);
    }

    /// Reads one call at `start` with `read(s, start, index)`, which records
    /// it at `index` as soon as it begins. Returns the index after the call.
    pub fn readCallWith(s: *Scanner, start: usize, comptime read: fn (*Scanner, usize, usize) Stop!usize) Stop!usize {
        const index = s.calls.items.len;
        return read(s, start, index) catch |err| {
            // Not a call after all: forget it.
            if (err == error.Invalid) s.calls.shrinkRetainingCapacity(@min(index, s.calls.items.len));
            return err;
        };
    }

    fn readCall(s: *Scanner, start: usize, index: usize) Stop!usize {
        var i = skipWs(s.text, start);
        if (i == s.text.len) return error.Incomplete;
        if (s.text[i] != '{') return error.Invalid;
        i += 1;
        try s.calls.append(.{});
        while (true) {
            i = skipWs(s.text, i);
            if (i == s.text.len) return error.Incomplete;
            switch (s.text[i]) {
                '}' => break,
                ',' => {
                    i += 1;
                    continue;
                },
                '"' => {},
                else => return error.Invalid,
            }
            const key_end = try scanString(s.text, i);
            const key = try s.decode(s.text[i..key_end]);
            i = skipWs(s.text, key_end);
            if (i == s.text.len) return error.Incomplete;
            if (s.text[i] != ':') return error.Invalid;
            i = skipWs(s.text, i + 1);
            if (i == s.text.len) return error.Incomplete;
            const is_args = std.mem.eql(u8, key, "arguments") or std.mem.eql(u8, key, "parameters");
            const call = &s.calls.items[index];
            const value_end = scanValue(s.text, i, s.final) catch |err| {
                if (err == error.Incomplete and is_args and s.text[i] != '"') call.arguments = s.text[i..];
                if (is_args) call.arguments_quoted = s.text[i] == '"';
                return err;
            };
            const value = s.text[i..value_end];
            if (std.mem.eql(u8, key, "name")) {
                if (value[0] != '"') return error.Invalid;
                call.name = try s.decode(value);
            } else if (is_args) {
                call.arguments_quoted = value[0] == '"';
                call.arguments = if (call.arguments_quoted) try s.decode(value) else value;
            } else if (std.mem.eql(u8, key, "id") and value[0] == '"') {
                call.id = try s.decode(value);
            }
            i = value_end;
        }
        const call = &s.calls.items[index];
        if (call.name == null) return error.Invalid;
        call.complete = true;
        return i + 1;
    }

    pub fn decode(s: *Scanner, quoted: []const u8) Stop![]const u8 {
        if (std.mem.indexOfScalar(u8, quoted, '\\') == null) return quoted[1 .. quoted.len - 1];
        return std.json.parseFromSliceLeaky([]const u8, s.arena, quoted, .{}) catch |err| switch (err) {
            error.OutOfMemory => error.OutOfMemory,
            else => error.Invalid,
        };
    }
};

pub fn validJson(arena: std.mem.Allocator, text: []const u8) bool {
    _ = std.json.parseFromSliceLeaky(std.json.Value, arena, text, .{}) catch return false;
    return true;
}

pub fn skipWs(text: []const u8, start: usize) usize {
    var i = start;
    while (i < text.len and std.ascii.isWhitespace(text[i])) i += 1;
    return i;
}

/// `text[i]` is `"`: the index after the closing quote.
pub fn scanString(text: []const u8, start: usize) error{Incomplete}!usize {
    var i = start + 1;
    while (i < text.len) : (i += 1) switch (text[i]) {
        '\\' => i += 1,
        '"' => return i + 1,
        else => {},
    };
    return error.Incomplete;
}

/// The end of the JSON value at `i` (its syntax is checked later, whole).
pub fn scanValue(text: []const u8, start: usize, final: bool) error{ Incomplete, Invalid }!usize {
    switch (text[start]) {
        '"' => return scanString(text, start),
        '{', '[' => {
            var depth: usize = 0;
            var i = start;
            while (i < text.len) {
                switch (text[i]) {
                    '"' => {
                        i = try scanString(text, i);
                        continue;
                    },
                    '{', '[' => depth += 1,
                    '}', ']' => {
                        depth -= 1;
                        if (depth == 0) return i + 1;
                    },
                    else => {},
                }
                i += 1;
            }
            return error.Incomplete;
        },
        else => {
            var i = start;
            while (i < text.len and (std.ascii.isAlphanumeric(text[i]) or text[i] == '-' or text[i] == '+' or text[i] == '.')) i += 1;
            if (i == start) return error.Invalid;
            if (i == text.len and !final) return error.Incomplete;
            return i;
        },
    }
}
