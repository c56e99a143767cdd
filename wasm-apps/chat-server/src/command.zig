//! chat-server's command mode, when no host request is set (no REQUEST_METHOD):
//! `render-template NAME` renders the messages JSON on stdin to a prompt on
//! stdout, `list-templates` prints the template names.

const std = @import("std");
const shared = @import("shared");
const chat_request = @import("chat/request.zig");

const nn = shared.nn;
const templates = shared.templates;
const template_request = shared.template_request;
const defaults = shared.defaults;
const Diagnostic = shared.api_error.Diagnostic;

// The server's own scope: the log reads as it did before command mode had a file.
const log = std.log.scoped(.chat_server);

const usage =
    \\chat-server: the OpenAI chat completions API as a WAGI app (see docs/chat-server.md).
    \\Run by a host with REQUEST_METHOD set, it answers one HTTP request. Without it:
    \\  chat-server.wasm render-template NAME   render {"messages":[...]} from stdin with template NAME
    \\  chat-server.wasm list-templates         print the template names, one a line
    \\
;

/// Runs the command in the arguments; the process's exit code.
pub fn run(allocator: std.mem.Allocator, env: *const std.process.EnvMap) u8 {
    const args = std.process.argsAlloc(allocator) catch return fail("out of memory", .{});
    defer std.process.argsFree(allocator, args);
    if (args.len == 2 and std.mem.eql(u8, args[1], "list-templates")) {
        var list = std.ArrayList(u8).init(allocator);
        defer list.deinit();
        list.appendSlice("auto\n") catch return fail("out of memory", .{});
        for (std.meta.fieldNames(templates.Template)) |name| list.writer().print("{s}\n", .{name}) catch return fail("out of memory", .{});
        std.io.getStdOut().writeAll(list.items) catch return 1;
        return 0;
    }
    if (args.len == 3 and std.mem.eql(u8, args[1], "render-template")) return renderCommand(allocator, env, args[2]);
    std.io.getStdErr().writeAll(usage) catch {};
    return 2;
}

fn renderCommand(allocator: std.mem.Allocator, env: *const std.process.EnvMap, name: []const u8) u8 {
    const is_auto = std.mem.eql(u8, name, "auto");
    const template = templates.Template.fromName(name);
    if (!is_auto and template == null) return fail("unknown template '{s}'; `list-templates` prints the names", .{name});

    const input = std.io.getStdIn().reader().readAllAlloc(allocator, 64 << 20) catch return fail("cannot read the messages from stdin", .{});
    defer allocator.free(input);
    var diag = Diagnostic{};
    var req = chat_request.parseChatRequest(allocator, input, &diag) catch |err| switch (err) {
        error.InvalidRequest => return fail("{s}", .{diag.err.message}),
        else => return fail("{s}", .{@errorName(err)}),
    };
    defer req.deinit();

    const prompt = if (template) |t|
        templates.renderTools(allocator, t, req.messages, req.tools) catch return fail("out of memory", .{})
    else blk: {
        const graph = env.get("LLAMAEDGE_MODEL_GRAPH") orelse defaults.graph;
        var backend = nn.Backend.open(graph) catch |err| return fail("cannot open model '{s}': {s}", .{ graph, @errorName(err) });
        var request = std.ArrayList(u8).init(allocator);
        defer request.deinit();
        template_request.append(&request, req.messages, req.tools, .{}) catch return fail("out of memory", .{});
        break :blk backend.renderTemplate(allocator, request.items) catch |err| return fail("the model's template failed: {s}", .{@errorName(err)});
    };
    defer allocator.free(prompt);
    std.io.getStdOut().writeAll(prompt) catch return 1;
    return 0;
}

fn fail(comptime fmt: []const u8, args: anytype) u8 {
    log.err(fmt, args);
    return 1;
}
