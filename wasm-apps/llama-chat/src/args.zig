//! The command line of llama-chat. The flag names follow LlamaEdge's
//! llama-chat where it has the same option; `--name=value` works too.

const std = @import("std");
const shared = @import("shared");
const templates = shared.templates;
const Options = @import("conversation.zig").Options;

pub const usage = std.fmt.comptimePrint(
    \\Usage: llama-chat.wasm [OPTIONS]
    \\Chat with a preloaded model in the terminal (llamaedge run-wasm --nn-preload default:GGML:AUTO:model.gguf).
    \\
    \\  -a, --model-alias NAME       the preloaded model to use (default: {s})
    \\  -c, --ctx-size N             the context size in tokens: asked of the host when it loads the model,
    \\                               and what the history is fitted to (default: {d}, the host's default)
    \\  -n, --n-predict N            the most tokens per answer (default: {d})
    \\  -p, --prompt-template NAME   auto (the model's own template; default) or one of the names below
    \\  -s, --system-prompt TEXT     the system prompt, kept when old turns are dropped
    \\  -r, --reverse-prompt TEXT    end an answer where the model writes TEXT (repeatable)
    \\      --temp X                 sampling temperature (0: greedy)
    \\      --top-p X                nucleus sampling, 0 < X <= 1
    \\      --repeat-penalty X       penalize repeated tokens (1: off)
    \\      --presence-penalty X     penalize tokens already present (0: off)
    \\      --frequency-penalty X    penalize tokens by their frequency (0: off)
    \\      --seed N                 sampling seed
    \\      --log-prompts            print each prompt as rendered (on stderr)
    \\      --log-stat               print token counts after each answer (on stderr)
    \\      --check                  check the options and exit (0 when they are good)
    \\  -h, --help                   print this help
    \\
    \\In the chat: /reset forgets the conversation (the system prompt stays), /help lists the commands,
    \\/exit or end of input (Ctrl-D) quits.
    \\
, .{ shared.defaults.graph, shared.defaults.ctx_size, (Options{}).n_predict });

pub const Cli = struct {
    model_alias: []const u8 = shared.defaults.graph,
    options: Options = .{},
    system_prompt: ?[]const u8 = null,
    log_prompts: bool = false,
    log_stat: bool = false,
    help: bool = false,
    check: bool = false,
    /// --ctx-size was given: the host is asked for that context when it loads the model.
    ctx_size_given: bool = false,
    /// Backs options.stops.
    stops: std.ArrayListUnmanaged([]const u8) = .empty,

    pub fn deinit(self: *Cli, allocator: std.mem.Allocator) void {
        self.stops.deinit(allocator);
    }
};

/// What was wrong with the command line, as one line of text.
pub const Diagnostic = struct {
    buf: [512]u8 = undefined,
    message: []const u8 = "",

    fn set(self: *Diagnostic, comptime fmt: []const u8, args: anytype) error{Usage} {
        self.message = std.fmt.bufPrint(&self.buf, fmt, args) catch blk: {
            const ellipsis = "...";
            @memcpy(self.buf[self.buf.len - ellipsis.len ..], ellipsis);
            break :blk self.buf[0..];
        };
        return error.Usage;
    }
};

/// Parses `args` (without the program name). Texts point into `args`.
pub fn parse(allocator: std.mem.Allocator, args: []const []const u8, diag: *Diagnostic) !Cli {
    var cli = Cli{};
    errdefer cli.deinit(allocator);
    var i: usize = 0;
    while (i < args.len) : (i += 1) {
        const arg = args[i];
        if (!std.mem.startsWith(u8, arg, "-") or arg.len == 1)
            return diag.set("unexpected argument '{s}'; --help lists the options", .{arg});
        // --name=value carries its value; otherwise it is the next argument.
        var name = arg;
        var inline_value: ?[]const u8 = null;
        if (std.mem.startsWith(u8, arg, "--")) if (std.mem.indexOfScalar(u8, arg, '=')) |eq| {
            name = arg[0..eq];
            inline_value = arg[eq + 1 ..];
        };
        const flag = Flag.find(name) orelse return diag.set("unknown option '{s}'; --help lists the options", .{name});
        if (!flag.takesValue()) {
            if (inline_value != null) return diag.set("{s} takes no value", .{name});
            switch (flag) {
                .log_prompts => cli.log_prompts = true,
                .log_stat => cli.log_stat = true,
                .help => cli.help = true,
                .check => cli.check = true,
                else => unreachable,
            }
            continue;
        }
        const value = inline_value orelse blk: {
            i += 1;
            if (i == args.len) return diag.set("{s} needs a value; --help lists the options", .{name});
            break :blk args[i];
        };
        const o = &cli.options;
        switch (flag) {
            .model_alias => cli.model_alias = try nonEmpty(diag, name, value),
            .ctx_size => {
                o.ctx_size = try integer(u32, diag, name, value, 8);
                cli.ctx_size_given = true;
            },
            .n_predict => o.n_predict = try integer(u32, diag, name, value, 1),
            .prompt_template => o.template = try template(diag, value),
            .system_prompt => cli.system_prompt = value,
            .reverse_prompt => try cli.stops.append(allocator, try nonEmpty(diag, name, value)),
            .temp => o.temp = try number(diag, name, value, 0, null),
            .top_p => {
                o.top_p = try number(diag, name, value, 0, 1);
                if (o.top_p.? == 0) return diag.set("{s} must be above 0, got '{s}'", .{ name, value });
            },
            .repeat_penalty => o.repeat_penalty = try number(diag, name, value, 0, null),
            .presence_penalty => o.presence_penalty = try number(diag, name, value, -2, 2),
            .frequency_penalty => o.frequency_penalty = try number(diag, name, value, -2, 2),
            .seed => o.seed = std.fmt.parseInt(i64, value, 10) catch return diag.set("{s} must be an integer, got '{s}'", .{ name, value }),
            .log_prompts, .log_stat, .help, .check => unreachable,
        }
    }
    cli.options.stops = cli.stops.items;
    return cli;
}

const Flag = enum {
    model_alias,
    ctx_size,
    n_predict,
    prompt_template,
    system_prompt,
    reverse_prompt,
    temp,
    top_p,
    repeat_penalty,
    presence_penalty,
    frequency_penalty,
    seed,
    log_prompts,
    log_stat,
    help,
    check,

    const names = [_]struct { []const u8, ?[]const u8, Flag }{
        .{ "--model-alias", "-a", .model_alias },
        .{ "--ctx-size", "-c", .ctx_size },
        .{ "--n-predict", "-n", .n_predict },
        .{ "--prompt-template", "-p", .prompt_template },
        .{ "--system-prompt", "-s", .system_prompt },
        .{ "--reverse-prompt", "-r", .reverse_prompt },
        .{ "--temp", null, .temp },
        .{ "--top-p", null, .top_p },
        .{ "--repeat-penalty", null, .repeat_penalty },
        .{ "--presence-penalty", null, .presence_penalty },
        .{ "--frequency-penalty", null, .frequency_penalty },
        .{ "--seed", null, .seed },
        .{ "--log-prompts", null, .log_prompts },
        .{ "--log-stat", null, .log_stat },
        .{ "--help", "-h", .help },
        .{ "--check", null, .check },
    };

    fn find(text: []const u8) ?Flag {
        for (names) |entry| {
            if (std.mem.eql(u8, text, entry[0])) return entry[2];
            if (entry[1]) |short| if (std.mem.eql(u8, text, short)) return entry[2];
        }
        return null;
    }

    fn takesValue(self: Flag) bool {
        return switch (self) {
            .log_prompts, .log_stat, .help, .check => false,
            else => true,
        };
    }
};

fn nonEmpty(diag: *Diagnostic, name: []const u8, value: []const u8) ![]const u8 {
    if (value.len == 0) return diag.set("{s} must not be empty", .{name});
    return value;
}

fn integer(comptime T: type, diag: *Diagnostic, name: []const u8, value: []const u8, min: T) !T {
    const n = std.fmt.parseInt(T, value, 10) catch return diag.set("{s} must be a whole number, got '{s}'", .{ name, value });
    if (n < min) return diag.set("{s} must be at least {d}, got {d}", .{ name, min, n });
    return n;
}

fn number(diag: *Diagnostic, name: []const u8, value: []const u8, min: f64, max: ?f64) !f64 {
    const x = std.fmt.parseFloat(f64, value) catch return diag.set("{s} must be a number, got '{s}'", .{ name, value });
    if (!std.math.isFinite(x) or x < min or (max != null and x > max.?)) {
        if (max) |top| return diag.set("{s} must be between {d} and {d}, got '{s}'", .{ name, min, top, value });
        return diag.set("{s} must be at least {d}, got '{s}'", .{ name, min, value });
    }
    return x;
}

fn template(diag: *Diagnostic, value: []const u8) !?templates.Template {
    if (std.mem.eql(u8, value, "auto")) return null;
    if (templates.Template.fromName(value)) |t| return t;
    var names: [512]u8 = undefined;
    var stream = std.io.fixedBufferStream(&names);
    for (std.meta.fieldNames(templates.Template), 0..) |known, i| {
        if (i > 0) stream.writer().writeAll(", ") catch break;
        stream.writer().writeAll(known) catch break;
    }
    return diag.set("unknown prompt template '{s}'; use auto or one of: {s}", .{ value, stream.getWritten() });
}

// ---------------------------------------------------------------------------

const testing = std.testing;

fn expectUsage(args: []const []const u8, fragment: []const u8) !void {
    var diag = Diagnostic{};
    try testing.expectError(error.Usage, parse(testing.allocator, args, &diag));
    // Not found: compare whole, so that the failure shows the message.
    if (std.mem.indexOf(u8, diag.message, fragment) == null) try testing.expectEqualStrings(fragment, diag.message);
    try testing.expect(std.mem.indexOfScalar(u8, diag.message, '\n') == null);
}

test "the defaults" {
    var diag = Diagnostic{};
    var cli = try parse(testing.allocator, &.{}, &diag);
    defer cli.deinit(testing.allocator);
    try testing.expectEqualStrings("default", cli.model_alias);
    try testing.expectEqual(@as(u32, 4096), cli.options.ctx_size);
    try testing.expectEqual(@as(u32, 1024), cli.options.n_predict);
    try testing.expect(cli.options.template == null and cli.system_prompt == null and cli.options.temp == null);
    try testing.expect(!cli.ctx_size_given);
}

test "short and long names, inline values, repeated reverse prompts" {
    var diag = Diagnostic{};
    var cli = try parse(testing.allocator, &.{
        "-p",           "llama-3-chat", "--system-prompt=Be brief.", "-n", "64", "--ctx-size", "512",
        "--temp",       "0",            "-r",                        "User:", "--reverse-prompt=###", "--log-prompts",
        "--top-p=0.5", "-a",           "chat",
    }, &diag);
    defer cli.deinit(testing.allocator);
    try testing.expectEqual(templates.Template.@"llama-3-chat", cli.options.template.?);
    try testing.expectEqualStrings("Be brief.", cli.system_prompt.?);
    try testing.expectEqual(@as(u32, 64), cli.options.n_predict);
    try testing.expectEqual(@as(u32, 512), cli.options.ctx_size);
    try testing.expect(cli.ctx_size_given);
    try testing.expectEqual(@as(f64, 0), cli.options.temp.?);
    try testing.expectEqual(@as(f64, 0.5), cli.options.top_p.?);
    try testing.expectEqual(@as(usize, 2), cli.options.stops.len);
    try testing.expectEqualStrings("###", cli.options.stops[1]);
    try testing.expect(cli.log_prompts and !cli.log_stat and !cli.check);
    try testing.expectEqualStrings("chat", cli.model_alias);
}

test "auto is the model's own template" {
    var diag = Diagnostic{};
    var cli = try parse(testing.allocator, &.{ "--prompt-template", "auto" }, &diag);
    defer cli.deinit(testing.allocator);
    try testing.expect(cli.options.template == null);
}

test "bad command lines name the problem in one line" {
    try expectUsage(&.{"--bogus"}, "unknown option '--bogus'");
    try expectUsage(&.{"-n"}, "-n needs a value");
    try expectUsage(&.{ "-n", "many" }, "-n must be a whole number, got 'many'");
    try expectUsage(&.{ "-n", "0" }, "-n must be at least 1");
    try expectUsage(&.{ "--ctx-size", "-5" }, "--ctx-size must be a whole number");
    try expectUsage(&.{ "--temp", "-1" }, "--temp must be at least 0");
    try expectUsage(&.{"--temp=nan"}, "--temp must be at least 0");
    try expectUsage(&.{ "--top-p", "2" }, "--top-p must be between 0 and 1");
    try expectUsage(&.{ "-p", "klingon" }, "unknown prompt template 'klingon'; use auto or one of: chatml, llama-3-chat");
    try expectUsage(&.{"--log-stat=yes"}, "--log-stat takes no value");
    try expectUsage(&.{"hello"}, "unexpected argument 'hello'");
    try expectUsage(&.{ "-r", "" }, "-r must not be empty");
}
