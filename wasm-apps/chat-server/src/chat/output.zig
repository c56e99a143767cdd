//! The chat path's output in OpenAI's shape: one `chat.completion` object,
//! or a stream of `chat.completion.chunk` events.

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const response = @import("response.zig");
const completion = @import("completion.zig");

const Diagnostic = shared.api_error.Diagnostic;
const ApiError = shared.api_error.ApiError;
const ChatRequest = request.ChatRequest;
const Config = completion.Config;
const Info = completion.Info;
const Usage = completion.Usage;
const ClientGone = completion.ClientGone;
const Finish = @import("../generation.zig").Finish;

/// Runs a chat completion and writes it in OpenAI's shape (one JSON object,
/// or chat.completion.chunk events). `out` is anything with `writeAll`; each
/// call is one write on the wire. error.InvalidRequest (with `diag` set)
/// comes before anything was written, so the caller answers with that error;
/// errors after the response began are written into the stream here.
/// error.ClientGone: the client left, stop at once.
pub fn complete(
    allocator: std.mem.Allocator,
    backend: anytype,
    out: anytype,
    req: *const ChatRequest,
    cfg: Config,
    diag: *Diagnostic,
) !void {
    var output = OpenAIOutput(@TypeOf(out)).init(allocator, out, cfg, req.include_usage);
    defer output.deinit();
    return completion.generate(allocator, backend, &output, req, cfg, diag);
}

/// OpenAI's chat completion shapes.
pub fn OpenAIOutput(comptime Out: type) type {
    return struct {
        const Self = @This();
        out: Out,
        cfg: Config,
        include_usage: bool,
        event: std.ArrayList(u8),
        fingerprint_buf: [40]u8 = undefined,
        env: response.Envelope = undefined,
        /// The timings for the stream's last finish chunk, when no usage chunk comes after it.
        last_timings: ?shared.nn.Timings = null,

        pub fn init(allocator: std.mem.Allocator, out: Out, cfg: Config, include_usage: bool) Self {
            return .{ .out = out, .cfg = cfg, .include_usage = include_usage, .event = std.ArrayList(u8).init(allocator) };
        }

        pub fn deinit(self: *Self) void {
            self.event.deinit();
        }

        fn setEnvelope(self: *Self, build: ?i64) void {
            self.env = .{
                .id = self.cfg.id,
                .created = self.cfg.created,
                .model = self.cfg.model_id,
                // A host that does not know its llama.cpp build says 0.
                .system_fingerprint = if (build) |b| if (b <= 0) "fp_llamaedge" else
                    std.fmt.bufPrint(&self.fingerprint_buf, "fp_llamaedge_b{d}", .{b}) catch "fp_llamaedge"
                else
                    "fp_llamaedge",
            };
        }

        fn chunk(self: *Self, choice: u32, delta: response.Delta, logprobs: ?[]const u8, finish: ?Finish) !void {
            self.event.clearRetainingCapacity();
            const timings = if (finish != null and !self.include_usage) self.last_timings else null;
            try response.appendChoiceChunk(&self.event, self.env, choice, delta, logprobs, finish, timings);
            try write(self.out, self.event.items);
        }

        /// The timings, before the stream's last choice ends: llama-server
        /// writes them in the last chunk (the usage chunk, when there is one).
        pub fn lastTimings(self: *Self, timings: ?shared.nn.Timings) void {
            self.last_timings = timings;
        }

        pub fn start(self: *Self, info: Info) !void {
            self.setEnvelope(info.build);
            try write(self.out, "Status: 200 OK\nContent-Type: text/event-stream\nCache-Control: no-cache\n\n");
            for (0..info.n) |i| try self.chunk(@intCast(i), if (info.tools) .role_null else .role, null, null);
        }

        pub fn text(self: *Self, choice: u32, bytes: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .content = bytes }, logprobs, null);
        }

        pub fn reasoning(self: *Self, choice: u32, bytes: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .reasoning = bytes }, logprobs, null);
        }

        pub fn callStart(self: *Self, choice: u32, index: u32, id: []const u8, name: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .call_start = .{ .index = index, .id = id, .name = name } }, logprobs, null);
        }

        pub fn callArguments(self: *Self, choice: u32, index: u32, fragment: []const u8, logprobs: ?[]const u8) !void {
            try self.chunk(choice, .{ .call_arguments = .{ .index = index, .fragment = fragment } }, logprobs, null);
        }

        pub fn choiceEnd(self: *Self, choice: u32, finish: Finish, stop_sequence: ?[]const u8, logprobs: ?[]const u8) !void {
            _ = stop_sequence;
            try self.chunk(choice, .empty, logprobs, finish);
        }

        pub fn end(self: *Self, usage: Usage) !void {
            if (self.include_usage) {
                self.event.clearRetainingCapacity();
                try response.appendUsageChunk(&self.event, self.env, usage);
                try write(self.out, self.event.items);
            }
            try write(self.out, response.done_event);
        }

        pub fn fail(self: *Self, err: ApiError) !void {
            self.event.clearRetainingCapacity();
            try self.event.appendSlice("data: ");
            try shared.api_error.appendError(&self.event, err);
            try self.event.appendSlice("\n\n");
            try write(self.out, self.event.items);
            try write(self.out, response.done_event);
        }

        pub fn whole(self: *Self, info: Info, results: []const completion.Choice, usage: Usage) !void {
            self.setEnvelope(info.build);
            self.event.clearRetainingCapacity();
            try self.event.appendSlice("Status: 200 OK\nContent-Type: application/json\n\n");
            try response.appendCompletionChoices(&self.event, self.env, results, usage);
            try write(self.out, self.event.items);
        }
    };
}

fn write(out: anytype, bytes: []const u8) ClientGone!void {
    out.writeAll(bytes) catch return error.ClientGone;
}
