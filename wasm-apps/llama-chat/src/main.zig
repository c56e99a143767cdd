//! llama-chat: a chat with a preloaded model in the terminal, as a WASI
//! command. It reads a line from stdin, streams the answer to stdout as the
//! tokens come (a thinking model's thought first, marked and, on a terminal,
//! dimmed), and keeps the conversation for the next line. Inference is
//! WASI-NN through the apps' shared bindings (the `shared` module);
//! notices (context full, prompts with --log-prompts) go to stderr, so that
//! stdout holds the conversation only.

const std = @import("std");
const shared = @import("shared");
const args_mod = @import("args.zig");
const conversation = @import("conversation.zig");

const app = shared.app;
const nn = shared.nn;

pub const std_options: std.Options = .{ .log_level = .warn, .logFn = app.logLine };

/// The longest line read as one message.
const max_line_bytes = 1 << 20;

const user_cue = "[USER]:\n";
const assistant_cue = "[ASSISTANT]:\n";
/// Around a thinking model's thought, before its answer.
const thinking_cue = "[THINKING]:\n";
const thinking_end = "\n[END OF THINKING]\n";
/// SGR faint, and back to normal: the thought is dimmed on a terminal.
const dim_on = "\x1b[2m";
const dim_off = "\x1b[0m";

const commands_help =
    \\/reset  forget the conversation (the system prompt stays)
    \\/help   show this list
    \\/exit   quit (end of input, Ctrl-D, quits too)
    \\
;

pub fn main() u8 {
    const allocator = app.allocator;
    const argv = std.process.argsAlloc(allocator) catch return fail("out of memory", .{});
    defer std.process.argsFree(allocator, argv);

    var diag = args_mod.Diagnostic{};
    var cli = args_mod.parse(allocator, argv[@min(1, argv.len)..], &diag) catch |err| switch (err) {
        error.Usage => return failUsage(diag.message),
        else => return fail("out of memory", .{}),
    };
    defer cli.deinit(allocator);
    if (cli.help) {
        std.io.getStdOut().writeAll(args_mod.usage) catch {};
        return 0;
    }
    if (cli.check) return 0;

    var backend = openModel(&cli) catch |err| switch (err) {
        error.ModelNotFound => return fail("no model is preloaded as '{s}': run it with --nn-preload {s}:GGML:AUTO:model.gguf", .{ cli.model_alias, cli.model_alias }),
        else => return fail("cannot open the model '{s}': {s}", .{ cli.model_alias, @errorName(err) }),
    };
    var conv = conversation.Conversation.init(allocator, cli.options, cli.system_prompt) catch return fail("out of memory", .{});
    defer conv.deinit();

    var term = Terminal{ .cli = &cli, .color = std.io.getStdOut().isTty() };
    term.banner();
    chat(allocator, &conv, &backend, &term) catch |err| switch (err) {
        // Whoever reads our output has gone: nothing more to say.
        error.OutputClosed => return 0,
        else => return fail("{s}", .{@errorName(err)}),
    };
    return 0;
}

/// Opens the model; with --ctx-size, asks the host for that context (as a
/// load-time option, it applies when the host loads the model, not to one
/// already loaded).
fn openModel(cli: *const args_mod.Cli) nn.Error!nn.Backend {
    if (!cli.ctx_size_given) return nn.Backend.open(cli.model_alias);
    var buf: [64]u8 = undefined;
    const config = std.fmt.bufPrint(&buf, "{{\"ctx-size\":{d}}}", .{cli.options.ctx_size}) catch unreachable;
    return nn.Backend.openWithConfig(cli.model_alias, config);
}

/// The read-answer loop, until /exit or the end of input.
fn chat(allocator: std.mem.Allocator, conv: *conversation.Conversation, backend: *nn.Backend, term: *Terminal) !void {
    var stdin = std.io.bufferedReader(std.io.getStdIn().reader());
    var line = std.ArrayList(u8).init(allocator);
    defer line.deinit();
    while (true) {
        try term.out(user_cue);
        line.clearRetainingCapacity();
        stdin.reader().streamUntilDelimiter(line.writer(), '\n', max_line_bytes) catch |err| switch (err) {
            error.EndOfStream => if (line.items.len == 0) return,
            error.StreamTooLong => {
                try stdin.reader().skipUntilDelimiterOrEof('\n');
                term.note("[that message is longer than {d} bytes: not sent]", .{max_line_bytes});
                continue;
            },
            else => |e| return e,
        };
        const text = std.mem.trim(u8, line.items, " \t\r");
        if (text.len == 0) continue;
        if (text[0] == '/') {
            const word = text[0 .. std.mem.indexOfAny(u8, text, " \t") orelse text.len];
            if (std.mem.eql(u8, word, "/exit") or std.mem.eql(u8, word, "/quit")) return;
            if (std.mem.eql(u8, word, "/reset")) {
                conv.reset();
                term.note("[the conversation is forgotten; the system prompt stays]", .{});
            } else if (std.mem.eql(u8, word, "/help")) {
                term.noteText(commands_help);
            } else {
                term.note("[unknown command {s}: /help lists the commands]", .{word});
            }
            continue;
        }
        const outcome = conv.reply(backend, term, text) catch |err| switch (err) {
            error.OutputClosed, error.OutOfMemory => |e| return e,
            else => {
                try term.endAnswer();
                term.note("[the model failed while answering ({s}); the message was not kept]", .{@errorName(err)});
                continue;
            },
        };
        try term.endAnswer();
        switch (outcome) {
            .answered => |a| {
                switch (a.end) {
                    .stop => {},
                    .n_predict => term.note("[the answer reached the limit of {d} tokens (--n-predict)]", .{conv.options.n_predict}),
                    .context_full => term.note("[context full: the answer was cut off; the oldest turns will make room for the next one]", .{}),
                }
                if (term.cli.log_stat) term.note("[prompt {d} tokens, answer {d} tokens]", .{ a.prompt_tokens, a.tokens });
            },
            .too_long => |t| if (t.tokens) |n|
                term.note("[that message does not fit in the context: it makes a prompt of {d} tokens, {d} at most; not sent]", .{ n, conv.options.ctx_size - conv.options.reserve() })
            else
                term.note("[that message does not fit in the context of {d} tokens; not sent]", .{conv.options.ctx_size}),
            .template_failed => term.note("[the model's chat template rejected the conversation; the message was not kept]", .{}),
        }
    }
}

/// What the user sees: the conversation on stdout, notices on stderr.
const Terminal = struct {
    cli: *const args_mod.Cli,
    /// stdout is a terminal: the thought is dimmed.
    color: bool = false,
    /// The assistant's cue is out: its answer is on the line.
    answering: bool = false,
    /// The thought is being shown; the answer closes it.
    in_thought: bool = false,

    fn endAnswer(self: *Terminal) !void {
        try self.endThought();
        if (!self.answering) return;
        self.answering = false;
        try self.out("\n");
    }

    fn endThought(self: *Terminal) !void {
        if (!self.in_thought) return;
        self.in_thought = false;
        try self.out(thinking_end);
        if (self.color) try self.out(dim_off);
    }

    fn out(_: *Terminal, bytes: []const u8) error{OutputClosed}!void {
        std.io.getStdOut().writeAll(bytes) catch return error.OutputClosed;
    }

    fn noteText(_: *Terminal, message: []const u8) void {
        std.io.getStdErr().writeAll(message) catch {};
    }

    fn note(self: *Terminal, comptime fmt: []const u8, args: anytype) void {
        var buf: [1024]u8 = undefined;
        self.noteText(std.fmt.bufPrint(&buf, fmt ++ "\n", args) catch return);
    }

    fn banner(self: *Terminal) void {
        const o = self.cli.options;
        const template = if (o.template) |t| t.name() else "the model's own";
        self.note("llama-chat: model '{s}', template {s}, context {d} tokens, at most {d} per answer. /help lists the commands; /exit or Ctrl-D quits.", .{
            self.cli.model_alias, template, o.ctx_size, o.n_predict,
        });
    }

    // The conversation's `ui`.

    pub fn text(self: *Terminal, bytes: []const u8) !void {
        try self.endThought();
        try self.out(bytes);
    }

    pub fn thinking(self: *Terminal, bytes: []const u8) !void {
        if (!self.in_thought) {
            self.in_thought = true;
            if (self.color) try self.out(dim_on);
            try self.out(thinking_cue);
        }
        try self.out(bytes);
    }

    pub fn dropped(self: *Terminal, turns: usize) !void {
        self.note("[context full: dropped the {d} oldest turn{s} to make room; the system prompt stays]", .{ turns, if (turns == 1) "" else "s" });
    }

    pub fn fellBackToChatml(self: *Terminal) !void {
        self.note("[the model has no chat template of its own: using chatml]", .{});
    }

    /// The prompt fits: the answer comes next.
    pub fn prompt(self: *Terminal, rendered: []const u8, tokens: u32) !void {
        if (self.cli.log_prompts) {
            self.note("[prompt, {d} tokens]", .{tokens});
            self.noteText(rendered);
            self.noteText("\n[end of prompt]\n");
        }
        try self.out(assistant_cue);
        self.answering = true;
    }
};

fn fail(comptime fmt: []const u8, args: anytype) u8 {
    var buf: [1024]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "llama-chat: " ++ fmt ++ "\n", args) catch "llama-chat: error\n";
    std.io.getStdErr().writeAll(line) catch {};
    return 1;
}

fn failUsage(message: []const u8) u8 {
    _ = fail("{s}", .{message});
    return 2;
}

test {
    _ = @import("args.zig");
    _ = @import("conversation.zig");
}
