//! Images in a request (OpenAI's `image_url` data URLs, Anthropic's base64
//! sources, the Responses API's `input_image`): checked, then written into the
//! message's text as the tag the host's WASI-NN reads an image from
//! (`<img src="data:image/png;base64,...">`, WasmEdge's GGML plugin's form).
//! The format comes from the first bytes and the size from the header, so the
//! host's limits (LLAMAEDGE_IMAGE_BYTES_MAX, LLAMAEDGE_IMAGE_PIXELS_MAX) are
//! checked here, with a 400 that names the limit, before any decoder runs.
//! Pure: no I/O.

const std = @import("std");

pub const Kind = enum {
    png,
    jpeg,
    gif,
    bmp,
    /// Decoded by the host (Pillow), not by mtmd, which reads WebP only through ffmpeg.
    webp,

    pub fn mime(self: Kind) []const u8 {
        return switch (self) {
            .png => "image/png",
            .jpeg => "image/jpeg",
            .gif => "image/gif",
            .bmp => "image/bmp",
            .webp => "image/webp",
        };
    }
};

/// What the formats are, for messages (llamaedge/images.py SUPPORTED says the same).
pub const supported = "PNG, JPEG, WebP, GIF (its first frame; a WebP's too) or BMP";

/// The limits an image must keep (the host's; llamaedge/limits.py).
pub const Limits = struct {
    bytes_max: u64,
    pixels_max: u64,
};

/// Why an image was refused.
pub const Problem = union(enum) {
    /// An http(s) URL: the server fetches nothing for a client.
    remote_url,
    /// Not a `data:...;base64,` URL.
    not_data_url,
    not_base64,
    not_image,
    bad_header,
    too_many_bytes: u64,
    too_many_pixels: struct { width: u32, height: u32 },
};

pub const Checked = struct {
    kind: Kind,
    /// The tag to put in the message's text.
    tag: []const u8,
};

/// A base64 payload (no data: prefix) checked against `limits`, and its tag.
pub fn fromBase64(arena: std.mem.Allocator, payload: []const u8, limits: Limits, problem: *Problem) !Checked {
    const decoder = std.base64.standard.Decoder;
    const size = decoder.calcSizeForSlice(payload) catch {
        problem.* = .not_base64;
        return error.BadImage;
    };
    if (size > limits.bytes_max) {
        problem.* = .{ .too_many_bytes = size };
        return error.BadImage;
    }
    const bytes = try arena.alloc(u8, size);
    defer arena.free(bytes);
    decoder.decode(bytes, payload) catch {
        problem.* = .not_base64;
        return error.BadImage;
    };
    const kind = formatOf(bytes) orelse {
        problem.* = .not_image;
        return error.BadImage;
    };
    const size_px = dimensions(kind, bytes) orelse {
        problem.* = .bad_header;
        return error.BadImage;
    };
    if (@as(u64, size_px[0]) * size_px[1] > limits.pixels_max) {
        problem.* = .{ .too_many_pixels = .{ .width = size_px[0], .height = size_px[1] } };
        return error.BadImage;
    }
    const tag = try std.fmt.allocPrint(arena, "<img src=\"data:{s};base64,{s}\">", .{ kind.mime(), payload });
    return .{ .kind = kind, .tag = tag };
}

/// An image URL: a `data:<type>;base64,<payload>` URL, checked as fromBase64.
pub fn fromUrl(arena: std.mem.Allocator, url: []const u8, limits: Limits, problem: *Problem) !Checked {
    if (std.ascii.startsWithIgnoreCase(url, "http://") or std.ascii.startsWithIgnoreCase(url, "https://")) {
        problem.* = .remote_url;
        return error.BadImage;
    }
    const marker = ";base64,";
    const at = std.mem.indexOf(u8, url, marker) orelse {
        problem.* = .not_data_url;
        return error.BadImage;
    };
    if (!std.ascii.startsWithIgnoreCase(url, "data:")) {
        problem.* = .not_data_url;
        return error.BadImage;
    }
    return fromBase64(arena, url[at + marker.len ..], limits, problem);
}

/// The sentence a 400 says for `problem`.
pub fn describe(buf: []u8, problem: Problem, limits: Limits) []const u8 {
    return switch (problem) {
        .remote_url => "Image URLs are not fetched: fetching them would let any client make this server fetch any address. Send the image inline as a data URL (data:image/png;base64,...), or start the server with --allow-image-urls.",
        .not_data_url => "An image must be a data URL with base64 content (data:image/png;base64,...).",
        .not_base64 => "The image's base64 content does not decode.",
        .not_image => "The data is not an image of a supported format: send " ++ supported ++ ".",
        .bad_header => "The image's header cannot be read (corrupt or truncated).",
        .too_many_bytes => |n| std.fmt.bufPrint(buf, "The image is {d} bytes, over the limit of {d} (image_bytes_max).", .{ n, limits.bytes_max }) catch "The image is over the byte limit (image_bytes_max).",
        .too_many_pixels => |s| std.fmt.bufPrint(buf, "The image is {d}x{d} pixels, over the limit of {d} pixels (image_pixels_max).", .{ s.width, s.height, limits.pixels_max }) catch "The image is over the pixel limit (image_pixels_max).",
    };
}

/// Whether a comma-separated capability list names `vision`.
pub fn hasVision(capabilities: []const u8) bool {
    var names = std.mem.tokenizeScalar(u8, capabilities, ',');
    while (names.next()) |name| {
        if (std.mem.eql(u8, std.mem.trim(u8, name, " "), "vision")) return true;
    }
    return false;
}

fn formatOf(bytes: []const u8) ?Kind {
    if (std.mem.startsWith(u8, bytes, "\x89PNG\r\n\x1a\n")) return .png;
    if (std.mem.startsWith(u8, bytes, "\xff\xd8\xff")) return .jpeg;
    if (std.mem.startsWith(u8, bytes, "GIF87a") or std.mem.startsWith(u8, bytes, "GIF89a")) return .gif;
    if (std.mem.startsWith(u8, bytes, "BM")) return .bmp;
    if (bytes.len >= 12 and std.mem.eql(u8, bytes[0..4], "RIFF") and std.mem.eql(u8, bytes[8..12], "WEBP")) return .webp;
    return null;
}

/// (width, height) from the header; null when it cannot be read.
fn dimensions(kind: Kind, b: []const u8) ?[2]u32 {
    switch (kind) {
        .png => {
            if (b.len < 24 or !std.mem.eql(u8, b[12..16], "IHDR")) return null;
            return .{ std.mem.readInt(u32, b[16..20], .big), std.mem.readInt(u32, b[20..24], .big) };
        },
        .gif => {
            if (b.len < 10) return null;
            return .{ std.mem.readInt(u16, b[6..8], .little), std.mem.readInt(u16, b[8..10], .little) };
        },
        .bmp => {
            if (b.len < 26) return null;
            const w = std.mem.readInt(i32, b[18..22], .little);
            const h = std.mem.readInt(i32, b[22..26], .little);
            return .{ @abs(w), @abs(h) };
        },
        .jpeg => return jpegDimensions(b),
        .webp => return webpDimensions(b),
    }
}

/// From the first chunk (the WebP container spec): a lossy frame's header (VP8),
/// a lossless one's (VP8L), or the extended format's canvas (VP8X).
fn webpDimensions(b: []const u8) ?[2]u32 {
    if (b.len < 30) return null;
    const chunk = b[12..16];
    if (std.mem.eql(u8, chunk, "VP8 ")) {
        if (!std.mem.eql(u8, b[23..26], "\x9d\x01\x2a")) return null; // a key frame's start code
        const w = std.mem.readInt(u16, b[26..28], .little) & 0x3FFF; // the top two bits are the scaling
        const h = std.mem.readInt(u16, b[28..30], .little) & 0x3FFF;
        return .{ w, h };
    }
    if (std.mem.eql(u8, chunk, "VP8L")) {
        if (b[20] != 0x2F) return null; // the lossless signature
        const bits = std.mem.readInt(u32, b[21..25], .little);
        return .{ (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1 };
    }
    if (std.mem.eql(u8, chunk, "VP8X")) {
        return .{ std.mem.readInt(u24, b[24..27], .little) + 1, std.mem.readInt(u24, b[27..30], .little) + 1 };
    }
    return null;
}

/// From the first start-of-frame segment (SOF0..SOF15 but DHT, JPG and DAC).
fn jpegDimensions(b: []const u8) ?[2]u32 {
    var i: usize = 2;
    while (i + 9 <= b.len) {
        if (b[i] != 0xFF) return null;
        const marker = b[i + 1];
        if (marker == 0xFF) {
            i += 1;
            continue;
        }
        if (marker >= 0xC0 and marker <= 0xCF and marker != 0xC4 and marker != 0xC8 and marker != 0xCC) {
            const h = std.mem.readInt(u16, b[i + 5 ..][0..2], .big);
            const w = std.mem.readInt(u16, b[i + 7 ..][0..2], .big);
            return .{ w, h };
        }
        if (marker == 0xD8 or (marker >= 0xD0 and marker <= 0xD7)) {
            i += 2;
            continue;
        }
        const length = std.mem.readInt(u16, b[i + 2 ..][0..2], .big);
        i += 2 + length;
    }
    return null;
}

const testing = std.testing;
const test_limits = Limits{ .bytes_max = 1000, .pixels_max = 10_000 };

fn expectProblem(url: []const u8, limits: Limits, expected: std.meta.Tag(Problem)) !void {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    var problem: Problem = .not_image;
    try testing.expectError(error.BadImage, fromUrl(arena.allocator(), url, limits, &problem));
    try testing.expectEqual(expected, std.meta.activeTag(problem));
}

test "a PNG data URL becomes the host's tag" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    // The first 24 bytes of a 2x3 PNG (signature, IHDR), base64.
    const png = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAAD";
    var problem: Problem = .not_image;
    const checked = try fromUrl(arena.allocator(), "data:image/png;base64," ++ png, test_limits, &problem);
    try testing.expectEqual(Kind.png, checked.kind);
    try testing.expectEqualStrings("<img src=\"data:image/png;base64," ++ png ++ "\">", checked.tag);
}

test "images are refused with the reason" {
    try expectProblem("https://example.com/cat.png", test_limits, .remote_url);
    try expectProblem("HTTP://example.com/cat.png", test_limits, .remote_url);
    try expectProblem("file:///etc/passwd", test_limits, .not_data_url);
    try expectProblem("data:image/png;base64,@@@@", test_limits, .not_base64);
    try expectProblem("data:text/plain;base64,aGVsbG8gd29ybGQ=", test_limits, .not_image);
    // A WebP too short to hold its frame header.
    try expectProblem("data:image/webp;base64,UklGRhAAAABXRUJQVlA4IAAAAAA=", test_limits, .bad_header);
    // A PNG whose header claims 1000x1000 pixels; and one over the byte limit.
    try expectProblem("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAA+gAAAPo", test_limits, .too_many_pixels);
    try expectProblem("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAA+gAAAPo", .{ .bytes_max = 10, .pixels_max = 1 << 30 }, .too_many_bytes);
    try expectProblem("data:image/png;base64,iVBORw0KGgo=", test_limits, .bad_header);
}

test "WebP sizes come from the first chunk" {
    var arena = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena.deinit();
    var problem: Problem = .not_image;
    // The first 30 bytes of WebPs Pillow made of a 40x24 picture: lossy (VP8),
    // lossless (VP8L), and an animation of two frames (VP8X); base64.
    const lossy = "UklGRtADAABXRUJQVlA4IMQDAACwEwCdASooABgA";
    const lossless = "UklGRqILAABXRUJQVlA4TJYLAAAvJ8AFAAUFAQAI";
    const animated = "UklGRpIXAABXRUJQVlA4WAoAAAACAAAAJwAAFwAA";
    // 40x24 is 960 pixels: each fits a limit of 960, and none one of 959.
    inline for (.{ lossy, lossless, animated }) |payload| {
        const checked = try fromBase64(arena.allocator(), payload, .{ .bytes_max = 1000, .pixels_max = 960 }, &problem);
        try testing.expectEqual(Kind.webp, checked.kind);
        try testing.expect(std.mem.startsWith(u8, checked.tag, "<img src=\"data:image/webp;base64,"));
        try expectProblem("data:image/webp;base64," ++ payload, .{ .bytes_max = 1000, .pixels_max = 959 }, .too_many_pixels);
    }
}

test "the messages name the limits" {
    var buf: [200]u8 = undefined;
    const text = describe(&buf, .{ .too_many_pixels = .{ .width = 9000, .height = 9000 } }, test_limits);
    try testing.expect(std.mem.indexOf(u8, text, "image_pixels_max") != null);
    try testing.expect(std.mem.indexOf(u8, describe(&buf, .remote_url, test_limits), "data URL") != null);
}

test "vision in a capability list" {
    try testing.expect(hasVision("chat,vision,tools"));
    try testing.expect(!hasVision("chat,tools"));
    try testing.expect(!hasVision(""));
}
