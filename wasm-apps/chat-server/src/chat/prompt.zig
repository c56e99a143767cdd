//! The chat prompt and the context budget: how tools reach the prompt (a
//! template's own format, or one taught in the system message), the prompt
//! rendered (a named template, or the model's own through the host), fitted
//! into the context by dropping the oldest turns, and set with the options.

const std = @import("std");
const shared = @import("shared");
const request = @import("request.zig");
const metadata = @import("metadata.zig");
const tool_format = @import("../tools/formats.zig");
const tool_grammar = @import("../tools/grammar.zig");

const templates = shared.templates;
const reasoning = shared.reasoning;
const template_request = shared.template_request;
const Diagnostic = shared.api_error.Diagnostic;
const ChatRequest = request.ChatRequest;

const log = std.log.scoped(.chat);

/// A chat completion's settings: the model, its context and template, and
/// the response's id.
pub const Config = struct {
    model_id: []const u8,
    ctx_size: u32,
    /// null: the model's own template, rendered by the host.
    template: ?templates.Template,
    created: i64,
    /// `chatcmpl-...`, the same in every chunk.
    id: []const u8,
    reasoning_format: reasoning.Format = .auto,
};

/// How the prompt is rendered.
const Render = struct {
    template: ?templates.Template,
    /// The functions the prompt lists (none for tool_choice "none").
    tools: []const templates.Tool = &.{},
    /// The template knows no tools: teach this format in the system message.
    teach: ?tool_format.Format = null,
};

/// The prompt as it will be generated from.
pub const Prepared = struct {
    prompt_tokens: u32,
    /// The most tokens the completion may have.
    n_predict: u32,
    build: ?i64,
    /// The format calls are read in; null: the answer is text only.
    format: ?tool_format.Format,
    /// The prompt, for the contexts of choices after the first. Owned.
    prompt: []u8,
    /// The call grammar every choice's metadata carries (in the request's arena).
    constraint: ?metadata.Constraint,
    /// Split the thinking from the answer: its tags, and whether the prompt
    /// opened the block. Null: the text stays as it is (`--reasoning-format none`).
    thinking: ?reasoning.Start,
};

/// Renders the prompt and fits it into the context: the answer gets a reserve
/// (max_tokens, or a fifth of the context); when the prompt is over the rest,
/// the oldest non-system turns are dropped (as few as possible, found by
/// bisection so that a long conversation costs a few tokenizations, not one per
/// turn). Then the options are set with the final n-predict, and the prompt set
/// again after them (the documented order).
pub fn prepare(
    allocator: std.mem.Allocator,
    arena: std.mem.Allocator,
    backend: anytype,
    req: *const ChatRequest,
    cfg: Config,
    diag: *Diagnostic,
) !Prepared {
    const ctx = cfg.ctx_size;
    const reserve = req.max_tokens orelse ctx / 5;
    if (reserve >= ctx)
        return diag.set(400, "max_tokens", "context_length_exceeded", "max_tokens ({d}) leaves no room for the messages: the model's context is {d} tokens.", .{ reserve, ctx });
    const plan = try planTools(allocator, backend, req, cfg);
    const fit = Fit{ .allocator = allocator, .messages = req.messages, .render = plan.render, .extras = .{ .thoughts = req.reasoning, .kwargs = req.template_kwargs }, .budget = ctx - reserve };

    var best = try fit.attempt(backend, 0, diag);
    // `best` changes below; the errdefer frees whichever prompt it holds then.
    errdefer allocator.free(best.prompt);
    if (!best.fits) {
        const droppable = fit.droppable();
        const smallest = if (droppable == 0) best else try fit.attempt(backend, droppable, diag);
        if (!smallest.fits) {
            if (droppable > 0) allocator.free(smallest.prompt);
            if (smallest.tokens > 0) return diag.set(400, "messages", "context_length_exceeded", "This model's maximum context length is {d} tokens. However, your messages resulted in {d} tokens, and {d} more are reserved for the completion. Shorten the messages or lower max_tokens.", .{ ctx, smallest.tokens, reserve });
            return diag.set(400, "messages", "context_length_exceeded", "This model's maximum context length is {d} tokens, and your messages do not fit in it. Shorten the messages.", .{ctx});
        }
        allocator.free(best.prompt);
        best = smallest;
        // fits(lo) is false, fits(hi) is true: find the fewest turns to drop.
        var lo: usize = 0;
        var hi = droppable;
        while (hi - lo > 1) {
            const mid = lo + (hi - lo) / 2;
            const try_mid = try fit.attempt(backend, mid, diag);
            if (try_mid.fits) {
                allocator.free(best.prompt);
                best = try_mid;
                hi = mid;
            } else {
                allocator.free(try_mid.prompt);
                lo = mid;
            }
        }
        log.info("dropped the {d} oldest message(s) to fit the context of {d} tokens", .{ best.dropped, ctx });
    }

    var n_predict = ctx - best.tokens;
    if (req.max_tokens) |max| n_predict = @min(n_predict, max);
    const constraint = if (plan.format) |f| try tool_grammar.constraint(arena, f, req.tools, req.tool_choice, req.parallel_tool_calls) else null;
    var options = std.ArrayList(u8).init(allocator);
    defer options.deinit();
    try metadata.appendMetadata(&options, req, .{ .n_predict = n_predict, .constraint = constraint, .preserved = &preserved_markers });
    backend.setMetadata(options.items) catch |err| return metadataError(err, req, constraint != null, diag);
    backend.setPrompt(best.prompt) catch return backendError(diag, "set the prompt");

    return .{
        .prompt_tokens = best.tokens,
        .n_predict = n_predict,
        .build = best.build,
        .format = plan.format,
        .prompt = best.prompt,
        .constraint = constraint,
        // Output constrained from its first token (response_format, a required
        // call) is the answer, whatever the prompt opened.
        .thinking = if (cfg.reasoning_format == .auto) blk: {
            var start = reasoning.startOf(best.prompt);
            start.opened = start.opened and !constrainedFromStart(req, constraint);
            break :blk start;
        } else null,
    };
}

/// Every marker the call and reasoning readers know, for the host's
/// `preserved-tokens`: where one is a control token of the model's vocabulary
/// (Gemma 4's), the host writes it into the text instead of dropping it; the
/// host ignores those that are not one token. End-of-turn tokens are not
/// among them, so they stay out of the text.
pub const preserved_markers = tool_format.markers ++ reasoning.markers;

/// The prompt's tokens as completion.zig's `generate` renders it for `req`, every turn kept
/// (Anthropic's count_tokens). A prompt over the whole context is a 400: the
/// host does not count it.
pub fn countPromptTokens(allocator: std.mem.Allocator, backend: anytype, req: *const ChatRequest, cfg: Config, diag: *Diagnostic) !u32 {
    const plan = try planTools(allocator, backend, req, cfg);
    const fit = Fit{ .allocator = allocator, .messages = req.messages, .render = plan.render, .extras = .{ .thoughts = req.reasoning, .kwargs = req.template_kwargs }, .budget = std.math.maxInt(u32) };
    const tried = try fit.attempt(backend, 0, diag);
    defer allocator.free(tried.prompt);
    if (!tried.fits) return diag.set(400, "messages", "context_length_exceeded", "The prompt is longer than this model's context of {d} tokens. Shorten the messages.", .{cfg.ctx_size});
    return tried.tokens;
}

/// Whether a grammar shapes the output from its first token (not lazily).
fn constrainedFromStart(req: *const ChatRequest, constraint: ?metadata.Constraint) bool {
    if (constraint) |c| return c.triggers.len == 0;
    return req.response_format != .text;
}

const Plan = struct {
    render: Render,
    /// The format calls are read in; null: no calls are read.
    format: ?tool_format.Format,
};

/// Decides how tools reach the prompt and how calls are read. A named
/// template with a native format uses it; other named templates are taught
/// the generic format. The model's own template is probed: rendered with the
/// tools, the prompt shows whether it lists them and in which format; if it
/// does not, the model is taught Hermes (ChatML models) or generic JSON.
/// With tool_choice "none" the tools stay out of the prompt and nothing is read.
fn planTools(allocator: std.mem.Allocator, backend: anytype, req: *const ChatRequest, cfg: Config) !Plan {
    const active = req.tools.len > 0 and req.tool_choice != .none;
    if (!active) {
        var render = Render{ .template = cfg.template };
        // Past calls in a template that has no form for them: shown as text.
        if (cfg.template) |t| if (t.toolFormat() == null and hasToolTurns(req.messages)) {
            render.teach = .generic;
        };
        return .{ .render = render, .format = null };
    }
    if (cfg.template) |t| {
        if (t.toolFormat()) |f| return .{ .render = .{ .template = t, .tools = req.tools }, .format = f };
        return .{ .render = .{ .template = t, .tools = req.tools, .teach = .generic }, .format = .generic };
    }
    var probe_request = std.ArrayList(u8).init(allocator);
    defer probe_request.deinit();
    try template_request.append(&probe_request, &.{.{ .role = .user, .content = "?" }}, req.tools, .{});
    const probe = backend.renderTemplate(allocator, probe_request.items) catch |err| switch (err) {
        error.NoTemplate => return .{ .render = .{ .template = .chatml, .tools = req.tools }, .format = .hermes },
        error.OutOfMemory => return error.OutOfMemory,
        else => {
            log.info("the model's chat template fails with tools: teaching the generic call format", .{});
            return .{ .render = .{ .template = null, .tools = req.tools, .teach = .generic }, .format = .generic };
        },
    };
    defer allocator.free(probe);
    if (tool_format.mentionsTools(probe, req.tools)) {
        const format = tool_format.detectFormat(probe);
        log.info("the model's chat template lists the tools; reading calls as {s}", .{@tagName(format)});
        return .{ .render = .{ .template = null, .tools = req.tools }, .format = format };
    }
    const format = tool_format.taughtFormat(probe);
    log.info("the model's chat template knows no tools; teaching the {s} call format", .{@tagName(format)});
    return .{ .render = .{ .template = null, .tools = req.tools, .teach = format }, .format = format };
}

fn hasToolTurns(messages: []const templates.Message) bool {
    for (messages) |m| if (m.role == .tool or m.tool_calls.len > 0) return true;
    return false;
}

/// Trying the conversation with its oldest turns dropped.
const Fit = struct {
    allocator: std.mem.Allocator,
    messages: []const templates.Message,
    render: Render,
    /// For the model's own template; thoughts by message index.
    extras: template_request.Extras = .{},
    budget: u32,

    const Attempt = struct {
        /// Owned by the caller.
        prompt: []u8,
        /// 0 when the host could not count them (prompt over the whole context).
        tokens: u32,
        /// The host's llama.cpp build, as it said with the count.
        build: ?i64 = null,
        fits: bool,
        dropped: usize,
    };

    /// How many messages can go: all but system messages and the last one.
    fn droppable(self: Fit) usize {
        var n: usize = 0;
        for (self.messages[0 .. self.messages.len - 1]) |m| n += @intFromBool(m.role != .system);
        return n;
    }

    /// Renders and sets the prompt without the `drop` oldest droppable
    /// messages (and without assistant turns that would then come first, so
    /// the conversation starts with the user), and counts its tokens.
    fn attempt(self: Fit, backend: anytype, drop: usize, diag: *Diagnostic) !Attempt {
        var selected = std.ArrayList(templates.Message).init(self.allocator);
        defer selected.deinit();
        var thoughts = std.ArrayList(?[]const u8).init(self.allocator);
        defer thoughts.deinit();
        var seen: usize = 0;
        var dropped: usize = 0;
        var at_front = true;
        for (self.messages, 0..) |m, i| {
            const is_last = i == self.messages.len - 1;
            if (m.role != .system and !is_last) {
                seen += 1;
                if (seen <= drop or (at_front and drop > 0 and (m.role == .assistant or m.role == .tool))) {
                    dropped += 1;
                    continue;
                }
            }
            if (m.role != .system) at_front = false;
            try selected.append(m);
            try thoughts.append(if (i < self.extras.thoughts.len) self.extras.thoughts[i] else null);
        }

        const extras = template_request.Extras{ .thoughts = thoughts.items, .kwargs = self.extras.kwargs };
        const prompt = try renderPrompt(self.allocator, backend, self.render, selected.items, extras, diag);
        errdefer self.allocator.free(prompt);
        var fits = true;
        backend.setPrompt(prompt) catch |err| switch (err) {
            error.PromptTooLong => fits = false,
            else => return backendError(diag, "set the prompt"),
        };
        if (fits) {
            const count = try inputTokens(self.allocator, backend, diag);
            return .{ .prompt = prompt, .tokens = count.tokens, .build = count.build, .fits = count.tokens <= self.budget, .dropped = dropped };
        }
        // Over the whole context: the host may still say by how much (for the message).
        var tokens = if (inputTokens(self.allocator, backend, diag)) |count| count.tokens else |_| 0;
        if (tokens <= self.budget) tokens = 0; // a count from an earlier prompt
        return .{ .prompt = prompt, .tokens = tokens, .fits = false, .dropped = dropped };
    }
};

fn renderPrompt(
    allocator: std.mem.Allocator,
    backend: anytype,
    render: Render,
    all_messages: []const templates.Message,
    extras: template_request.Extras,
    diag: *Diagnostic,
) ![]u8 {
    var scratch = std.heap.ArenaAllocator.init(allocator);
    defer scratch.deinit();
    var messages = all_messages;
    var listed = render.tools;
    var with = extras;
    if (render.teach) |format| {
        messages = try tool_format.teach(scratch.allocator(), all_messages, render.tools, format);
        listed = &.{};
        with.thoughts = &.{}; // the taught messages are not the client's, one for one
    }
    if (render.template) |t| return templates.renderTools(allocator, t, messages, listed);

    var template_json = std.ArrayList(u8).init(allocator);
    defer template_json.deinit();
    try template_request.append(&template_json, messages, listed, with);
    return backend.renderTemplate(allocator, template_json.items) catch |err| switch (err) {
        error.NoTemplate => {
            log.info("the model has no chat template of its own: using chatml", .{});
            return templates.renderTools(allocator, .chatml, messages, listed);
        },
        error.TemplateFailed => diag.set(400, "messages", null, "The model's chat template rejected these messages (for example, some templates require user and assistant turns to alternate). The server log has the template's message.", .{}),
        error.OutOfMemory => error.OutOfMemory,
        else => backendError(diag, "render the chat template"),
    };
}

/// The prompt's tokens, as the host counted them, and its llama.cpp build.
const Count = struct { tokens: u32, build: ?i64 };

fn inputTokens(allocator: std.mem.Allocator, backend: anytype, diag: *Diagnostic) !Count {
    const info = backend.info(allocator) catch return backendError(diag, "read the token count");
    defer info.deinit();
    const tokens = info.value.promptTokens() orelse {
        log.err("get_output(1) gave no input_tokens", .{});
        return backendError(diag, "read the token count");
    };
    return .{ .tokens = tokens, .build = info.value.llama_build_number };
}

/// The host refused the options: what the client sent that it could not take.
pub fn metadataError(err: anyerror, req: *const ChatRequest, has_constraint: bool, diag: *Diagnostic) error{InvalidRequest} {
    if (err != error.InvalidInput) return backendError(diag, "set the generation options");
    if (req.logit_bias != null)
        return diag.set(400, "logit_bias", null, "The model refused 'logit_bias': a key is not a token id of this model (or the host refused the other options).", .{});
    if (has_constraint)
        return diag.set(400, "tools", null, "The functions' 'parameters' schemas cannot be turned into a grammar for this model's calls.", .{});
    if (req.response_format == .json_schema)
        return diag.set(400, "response_format.json_schema.schema", null, "This JSON Schema cannot be turned into a grammar.", .{});
    return diag.set(400, null, null, "The model refused the generation options.", .{});
}

pub fn backendError(diag: *Diagnostic, what: []const u8) error{InvalidRequest} {
    return diag.set(500, null, null, "The model backend could not {s}; the server log has the details.", .{what});
}
