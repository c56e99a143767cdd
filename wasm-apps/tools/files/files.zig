//! files: list, read and search inside the directory the tool's policy grants
//! (its first preopened directory, which WASI libc and Zig call the current
//! directory). The tool does not check paths itself: wasmtime refuses any
//! path that leaves the granted directory (`..`, an absolute path, a symlink
//! out), and the call fails with the error it gets.

const std = @import("std");

/// The most bytes `read` returns, and `search` reads of one file.
pub const read_max_bytes = 256 * 1024;
/// The most matches `search` returns, and entries `list` returns.
pub const results_max = 200;
/// A matching line is cut to this many bytes.
const line_max_bytes = 300;

pub const Entry = struct {
    name: []const u8,
    kind: []const u8,
    size: ?u64 = null,
};

pub const Match = struct {
    path: []const u8,
    line: usize,
    text: []const u8,
};

fn kindName(kind: std.fs.Dir.Entry.Kind) []const u8 {
    return switch (kind) {
        .file => "file",
        .directory => "directory",
        .sym_link => "symlink",
        else => "other",
    };
}

fn lessThan(_: void, a: Entry, b: Entry) bool {
    return std.mem.lessThan(u8, a.name, b.name);
}

/// The entries of `path`, by name. Strings are allocated with `arena`.
pub fn list(arena: std.mem.Allocator, root: std.fs.Dir, path: []const u8) ![]Entry {
    var dir = try root.openDir(path, .{ .iterate = true });
    defer dir.close();
    var entries = std.ArrayList(Entry).init(arena);
    var it = dir.iterate();
    while (try it.next()) |entry| {
        if (entries.items.len == results_max) break;
        var size: ?u64 = null;
        if (entry.kind == .file) {
            if (dir.statFile(entry.name)) |stat| size = stat.size else |_| {}
        }
        try entries.append(.{ .name = try arena.dupe(u8, entry.name), .kind = kindName(entry.kind), .size = size });
    }
    std.mem.sort(Entry, entries.items, {}, lessThan);
    return entries.items;
}

pub const Text = struct {
    content: []const u8,
    truncated: bool,
};

/// The first `read_max_bytes` of the file at `path`: error.NotText unless UTF-8.
pub fn read(arena: std.mem.Allocator, root: std.fs.Dir, path: []const u8) !Text {
    var file = try root.openFile(path, .{});
    defer file.close();
    const buffer = try arena.alloc(u8, read_max_bytes + 1);
    const n = try file.readAll(buffer);
    var content = buffer[0..@min(n, read_max_bytes)];
    // A cut may fall inside a character: drop its first bytes.
    if (n > read_max_bytes) {
        var end = content.len;
        while (end > 0 and end + 4 > content.len and !std.unicode.utf8ValidateSlice(content[0..end])) end -= 1;
        content = content[0..end];
    }
    if (!std.unicode.utf8ValidateSlice(content)) return error.NotText;
    return .{ .content = content, .truncated = n > read_max_bytes };
}

/// Lines that contain `pattern`, in the files under `path` (regular files only:
/// a symlink is not followed). Files that are not text are passed over.
pub fn search(arena: std.mem.Allocator, root: std.fs.Dir, path: []const u8, pattern: []const u8) ![]Match {
    var dir = try root.openDir(path, .{ .iterate = true });
    defer dir.close();
    var walker = try dir.walk(arena);
    defer walker.deinit();
    var matches = std.ArrayList(Match).init(arena);
    while (try walker.next()) |entry| {
        if (entry.kind != .file) continue;
        const text = read(arena, entry.dir, entry.basename) catch continue;
        var lines = std.mem.splitScalar(u8, text.content, '\n');
        var number: usize = 0;
        while (lines.next()) |line| {
            number += 1;
            if (std.mem.indexOf(u8, line, pattern) == null) continue;
            const shown = std.mem.trimRight(u8, line[0..@min(line.len, line_max_bytes)], "\r");
            const joined = if (std.mem.eql(u8, path, ".")) try arena.dupe(u8, entry.path) else try std.fs.path.join(arena, &.{ path, entry.path });
            try matches.append(.{ .path = joined, .line = number, .text = try arena.dupe(u8, validPrefix(shown)) });
            if (matches.items.len == results_max) return matches.items;
        }
    }
    return matches.items;
}

/// `text` without a character cut at its end.
fn validPrefix(text: []const u8) []const u8 {
    var end = text.len;
    while (end > 0 and !std.unicode.utf8ValidateSlice(text[0..end])) end -= 1;
    return text[0..end];
}

test "list, read and search a directory" {
    var tmp = std.testing.tmpDir(.{ .iterate = true });
    defer tmp.cleanup();
    try tmp.dir.writeFile(.{ .sub_path = "b.txt", .data = "one\nneedle here\nthree\n" });
    try tmp.dir.makeDir("sub");
    try tmp.dir.writeFile(.{ .sub_path = "sub/a.txt", .data = "a needle\n" });
    var arena_state = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();

    const entries = try list(arena, tmp.dir, ".");
    try std.testing.expectEqual(@as(usize, 2), entries.len);
    try std.testing.expectEqualStrings("b.txt", entries[0].name);
    try std.testing.expectEqual(@as(?u64, 22), entries[0].size);
    try std.testing.expectEqualStrings("directory", entries[1].kind);

    const text = try read(arena, tmp.dir, "sub/a.txt");
    try std.testing.expectEqualStrings("a needle\n", text.content);

    const matches = try search(arena, tmp.dir, ".", "needle");
    try std.testing.expectEqual(@as(usize, 2), matches.len);
    try std.testing.expectError(error.FileNotFound, read(arena, tmp.dir, "missing.txt"));
}
