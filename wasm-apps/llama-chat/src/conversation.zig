//! The conversation of a terminal chat: the system prompt and the turns so
//! far, and one answer at a time. Each answer renders the whole conversation
//! (the model's own template, or a named one), fits it into the context by
//! dropping the oldest turns for good (never the system prompt), streams the
//! generated text as it comes, and keeps the answer as the next turn's history.
//! A thinking model's thought (a `<think>` block, split off as the chat server
//! does) is shown apart and never kept: the next prompt has the answers only.
//!
//! `backend` is anything with the methods of nn.Backend (renderTemplate,
//! setMetadata, setPrompt, info, next, finish), so this is tested below against
//! a scripted fake. `ui` receives what the user sees (see `reply`).

const std = @import("std");
const shared = @import("shared");
const templates = shared.templates;
const stream = shared.stream;
const reasoning = shared.reasoning;

const Message = templates.Message;

pub const Options = struct {
    /// The context size the budget assumes, in tokens.
    ctx_size: u32 = shared.defaults.ctx_size,
    /// The most tokens one answer may have.
    n_predict: u32 = 1024,
    /// null: the model's own template, rendered by the host (chatml when it has none).
    template: ?templates.Template = null,
    /// Texts that end an answer when the model writes them (not shown).
    stops: []const []const u8 = &.{},
    /// Sampling options, passed to the host as they are; null: the host's default.
    temp: ?f64 = null,
    top_p: ?f64 = null,
    repeat_penalty: ?f64 = null,
    presence_penalty: ?f64 = null,
    frequency_penalty: ?f64 = null,
    seed: ?i64 = null,

    /// Tokens kept free for the answer when the history is fitted: n_predict,
    /// but at most half the context, so that a long answer limit still leaves
    /// room for some history.
    pub fn reserve(self: Options) u32 {
        return @min(self.n_predict, self.ctx_size / 2);
    }
};

/// How an answer ended.
pub const End = enum {
    /// The model ended its turn (or wrote a stop text).
    stop,
    /// It reached n_predict tokens.
    n_predict,
    /// It filled the context; the oldest turns go before the next answer.
    context_full,
};

pub const Outcome = union(enum) {
    answered: struct {
        end: End,
        /// Turns dropped from the front of the history to fit this prompt.
        dropped: usize,
        prompt_tokens: u32,
        tokens: u32,
    },
    /// The message does not fit in the context even with no history; it was
    /// not sent and is not kept. `tokens`: the prompt it made (null: the host
    /// refused it as longer than its whole context).
    too_long: struct { tokens: ?u32 },
    /// The model's own template rejected the conversation; nothing was kept.
    template_failed,
};

pub const Conversation = struct {
    allocator: std.mem.Allocator,
    options: Options,
    /// The system prompt (if any) first, then user and assistant messages in
    /// turn; every content is owned.
    messages: std.ArrayListUnmanaged(Message) = .empty,
    /// Set once the model turned out to have no template of its own.
    fell_back_to_chatml: bool = false,

    pub fn init(allocator: std.mem.Allocator, options: Options, system_prompt: ?[]const u8) !Conversation {
        var self = Conversation{ .allocator = allocator, .options = options };
        errdefer self.deinit();
        if (system_prompt) |text| try self.append(.system, text);
        return self;
    }

    pub fn deinit(self: *Conversation) void {
        for (self.messages.items) |m| self.allocator.free(m.content);
        self.messages.deinit(self.allocator);
    }

    /// Forgets every turn; the system prompt stays.
    pub fn reset(self: *Conversation) void {
        const keep = self.firstTurn();
        for (self.messages.items[keep..]) |m| self.allocator.free(m.content);
        self.messages.shrinkRetainingCapacity(keep);
    }

    /// Number of turns (a user message and its answer) in the history.
    pub fn turns(self: *const Conversation) usize {
        return (self.messages.items.len - self.firstTurn() + 1) / 2;
    }

    fn firstTurn(self: *const Conversation) usize {
        return if (self.messages.items.len > 0 and self.messages.items[0].role == .system) 1 else 0;
    }

    fn append(self: *Conversation, role: templates.Role, content: []const u8) !void {
        const owned = try self.allocator.dupe(u8, content);
        errdefer self.allocator.free(owned);
        try self.messages.append(self.allocator, .{ .role = role, .content = owned });
    }

    fn removeAt(self: *Conversation, index: usize) void {
        self.allocator.free(self.messages.items[index].content);
        _ = self.messages.orderedRemove(index);
    }

    fn dropLast(self: *Conversation) void {
        self.removeAt(self.messages.items.len - 1);
    }

    /// Answers `text`. `ui` gets, in this order: `dropped(n)` when n turns had
    /// to go to make room, `fellBackToChatml()` the first time the model turns
    /// out to have no template, `prompt(text, tokens)` with the prompt about
    /// to be generated from, then `thinking(bytes)` for each piece of the
    /// model's thought and `text(bytes)` for each piece of the answer as they
    /// are generated (valid UTF-8, never a stop text; the thought comes first).
    /// An error from the host drops the unanswered message and returns the error.
    pub fn reply(self: *Conversation, backend: anytype, ui: anytype, text: []const u8) !Outcome {
        try self.append(.user, text);
        errdefer self.dropLast();

        var metadata = std.ArrayList(u8).init(self.allocator);
        defer metadata.deinit();
        try self.appendMetadata(&metadata);
        try backend.setMetadata(metadata.items);

        const found = self.fit(backend, ui) catch |err| switch (err) {
            error.TemplateFailed => {
                self.dropLast();
                return .template_failed;
            },
            else => |e| return e,
        };
        const fitted = switch (found) {
            .fitted => |f| f,
            .too_long => |tokens| {
                self.dropLast();
                return .{ .too_long = .{ .tokens = tokens } };
            },
        };
        defer self.allocator.free(fitted.prompt);
        const prompt_tokens = fitted.tokens.?;
        const drop = fitted.drop;
        const first = self.firstTurn();
        for (self.messages.items[first .. first + 2 * drop]) |m| self.allocator.free(m.content);
        self.messages.replaceRangeAssumeCapacity(first, 2 * drop, &.{});
        if (drop > 0) try ui.dropped(drop);
        try ui.prompt(fitted.prompt, prompt_tokens);

        var stop_texts = std.ArrayList([]const u8).init(self.allocator);
        defer stop_texts.deinit();
        try stop_texts.appendSlice(self.options.stops);
        if (self.endOfTurn()) |marker| try stop_texts.append(marker);

        const limit = @min(self.options.n_predict, self.options.ctx_size - prompt_tokens);
        var answer = std.ArrayList(u8).init(self.allocator);
        defer answer.deinit();
        const start = reasoning.startOf(fitted.prompt);
        const generated = generate(self.allocator, backend, ui, stop_texts.items, limit, start, &answer) catch |err| {
            backend.finish();
            return err;
        };
        backend.finish();
        // An answer cut short by the room left in the context ended with the context.
        const end: End = if (generated.end == .n_predict and limit < self.options.n_predict) .context_full else generated.end;
        try self.append(.assistant, answer.items);
        return .{ .answered = .{ .end = end, .dropped = drop, .prompt_tokens = prompt_tokens, .tokens = generated.tokens } };
    }

    const Attempt = struct {
        /// Owned by the caller.
        prompt: []u8,
        /// null: over the host's whole context.
        tokens: ?u32,
        /// The oldest turns left out.
        drop: usize,

        fn fits(self: Attempt, budget: u32) bool {
            return self.tokens != null and self.tokens.? <= budget;
        }
    };

    const Fit = union(enum) {
        /// The prompt as set on the backend, to generate from.
        fitted: Attempt,
        /// Not even the message alone fits: its prompt's tokens, if counted.
        too_long: ?u32,
    };

    /// Finds the fewest oldest turns to leave out so that the prompt fits the
    /// budget, leaving that prompt set on the backend. The history does not
    /// change here, so a message too long to send costs nothing. Usually one
    /// turn more has to go each time: the turns go one by one, after a check
    /// that the message fits at all.
    fn fit(self: *Conversation, backend: anytype, ui: anytype) !Fit {
        const budget = self.options.ctx_size - self.options.reserve();
        const most = self.turns() - 1; // every turn before the new message
        var drop: usize = 0;
        while (true) : (drop += 1) {
            const tried = try self.attempt(backend, ui, drop);
            if (tried.fits(budget)) return .{ .fitted = tried };
            self.allocator.free(tried.prompt);
            if (drop >= most) return .{ .too_long = tried.tokens };
            if (drop == 0 and most > 1) {
                const alone = try self.attempt(backend, ui, most);
                self.allocator.free(alone.prompt);
                if (!alone.fits(budget)) return .{ .too_long = alone.tokens };
            }
        }
    }

    /// Renders and sets the prompt without the `drop` oldest turns, and counts
    /// its tokens.
    fn attempt(self: *Conversation, backend: anytype, ui: anytype, drop: usize) !Attempt {
        const first = self.firstTurn();
        var view = std.ArrayList(Message).init(self.allocator);
        defer view.deinit();
        try view.appendSlice(self.messages.items[0..first]);
        try view.appendSlice(self.messages.items[first + 2 * drop ..]);
        const prompt = try self.render(backend, ui, view.items);
        errdefer self.allocator.free(prompt);
        return .{ .prompt = prompt, .tokens = try countTokens(self.allocator, backend, prompt), .drop = drop };
    }

    /// The template's own end-of-turn text joins the stop texts for a named
    /// template (the model may spell it out rather than end the turn).
    fn endOfTurn(self: *const Conversation) ?[]const u8 {
        if (self.options.template) |t| return t.endOfTurn();
        if (self.fell_back_to_chatml) return templates.Template.chatml.endOfTurn();
        return null;
    }

    fn render(self: *Conversation, backend: anytype, ui: anytype, messages: []const Message) ![]u8 {
        if (self.options.template) |t| return templates.render(self.allocator, t, messages);
        if (self.fell_back_to_chatml) return templates.render(self.allocator, .chatml, messages);

        var request = std.ArrayList(u8).init(self.allocator);
        defer request.deinit();
        try shared.template_request.append(&request, messages, &.{}, .{});
        return backend.renderTemplate(self.allocator, request.items) catch |err| switch (err) {
            error.NoTemplate => {
                self.fell_back_to_chatml = true;
                try ui.fellBackToChatml();
                return templates.render(self.allocator, .chatml, messages);
            },
            else => |e| return e,
        };
    }

    /// The sampling options as set_input(1) metadata. n-predict is the user's
    /// limit: the host ending earlier with "length" means the context is full.
    fn appendMetadata(self: *const Conversation, out: *std.ArrayList(u8)) !void {
        const o = self.options;
        try std.json.stringify(.{
            .@"n-predict" = o.n_predict,
            .temp = o.temp,
            .@"top-p" = o.top_p,
            .@"repeat-penalty" = o.repeat_penalty,
            .@"presence-penalty" = o.presence_penalty,
            .@"frequency-penalty" = o.frequency_penalty,
            .seed = o.seed,
            // Thinking markers that are control tokens (Gemma 4's) reach the text.
            .@"preserved-tokens" = &reasoning.markers,
        }, .{ .emit_null_optional_fields = false }, out.writer());
    }
};

/// Sets the prompt and reads back its token count; null when it does not fit
/// the host's context at all.
fn countTokens(allocator: std.mem.Allocator, backend: anytype, prompt: []const u8) !?u32 {
    backend.setPrompt(prompt) catch |err| switch (err) {
        error.PromptTooLong => return null,
        else => |e| return e,
    };
    const info = try backend.info(allocator);
    defer info.deinit();
    return info.value.promptTokens() orelse error.BackendFailed;
}

const Generated = struct { end: End, tokens: u32 };

/// The token loop: splits the thought (`start`: its tags, and whether the prompt opened it)
/// from the answer, streams the thought's pieces to `ui.thinking` and
/// the answer's to `ui.text`, and collects the answer in `answer`. Stop texts
/// apply to the answer only; the limit counts every token.
fn generate(
    allocator: std.mem.Allocator,
    backend: anytype,
    ui: anytype,
    stops: []const []const u8,
    limit: u32,
    start: reasoning.Start,
    answer: *std.ArrayList(u8),
) !Generated {
    var filter = stream.TextFilter.init(allocator, stops);
    defer filter.deinit();
    var thinking = reasoning.Reasoner.init(allocator, start);
    defer thinking.deinit();
    var tokens: u32 = 0;
    const end: End = while (true) {
        // The app enforces the limit itself: a host need not honour n-predict.
        if (tokens >= limit) break .n_predict;
        switch (try backend.next()) {
            .end => |reason| break if (reason == .length and tokens < limit) .context_full else if (reason == .length) .n_predict else .stop,
            .token => |bytes| {
                tokens += 1;
                const parts = try thinking.push(bytes);
                if (parts.reasoning.len > 0) try ui.thinking(parts.reasoning);
                try emit(ui, answer, try filter.push(parts.content));
                if (filter.stopped) break .stop;
            },
        }
    };
    const rest = try thinking.finish();
    if (rest.reasoning.len > 0) try ui.thinking(rest.reasoning);
    try emit(ui, answer, try filter.push(rest.content));
    try emit(ui, answer, try filter.finish());
    return .{ .end = end, .tokens = tokens };
}

fn emit(ui: anytype, answer: *std.ArrayList(u8), piece: []const u8) !void {
    if (piece.len == 0) return;
    try answer.appendSlice(piece);
    try ui.text(piece);
}

// ---------------------------------------------------------------------------

const testing = std.testing;

const FakeBackend = shared.test_support.FakeBackend;

/// Records what the user would see.
const FakeUi = struct {
    shown: std.ArrayList(u8),
    pieces: usize = 0,
    dropped_turns: usize = 0,
    fallbacks: usize = 0,
    last_prompt_tokens: u32 = 0,

    fn init() FakeUi {
        return .{ .shown = std.ArrayList(u8).init(testing.allocator) };
    }

    fn deinit(self: *FakeUi) void {
        self.shown.deinit();
    }

    pub fn text(self: *FakeUi, bytes: []const u8) !void {
        self.pieces += 1;
        try self.shown.appendSlice(bytes);
    }

    /// The thought, marked so that tests see what was shown as thinking.
    pub fn thinking(self: *FakeUi, bytes: []const u8) !void {
        try self.shown.writer().print("({s})", .{bytes});
    }

    pub fn dropped(self: *FakeUi, n: usize) !void {
        self.dropped_turns += n;
    }

    pub fn fellBackToChatml(self: *FakeUi) !void {
        self.fallbacks += 1;
    }

    pub fn prompt(self: *FakeUi, _: []const u8, tokens: u32) !void {
        self.last_prompt_tokens = tokens;
    }
};

const contains = shared.test_support.contains;

test "an answer streams piece by piece and becomes history for the next turn" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "Hel", "lo \xC3", "\xA9!" } };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml }, "Be brief.");
    defer conv.deinit();

    const first = try conv.reply(&backend, &ui, "hi");
    try testing.expectEqual(End.stop, first.answered.end);
    try testing.expectEqual(@as(u32, 3), first.answered.tokens);
    try testing.expectEqualStrings("Hello é!", ui.shown.items);
    try testing.expectEqual(@as(usize, 3), ui.pieces); // "Hel", "lo ", "é!": the split character waits
    try testing.expectEqual(@as(usize, 1), backend.finished);

    _ = try conv.reply(&backend, &ui, "again");
    try testing.expectEqualStrings("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" ++
        "<|im_start|>assistant\nHello é!<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n", backend.prompt.items);
    try testing.expectEqual(@as(usize, 2), conv.turns());
}

test "the sampling options reach the metadata, unset ones left to the host" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .n_predict = 64, .temp = 0, .seed = 7 }, null);
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "hi");
    const parsed = try std.json.parseFromSlice(std.json.Value, testing.allocator, backend.metadata.items, .{});
    defer parsed.deinit();
    const object = parsed.value.object;
    try testing.expectEqual(@as(i64, 64), object.get("n-predict").?.integer);
    try testing.expectEqual(@as(f64, 0), object.get("temp").?.float);
    try testing.expectEqual(@as(i64, 7), object.get("seed").?.integer);
    try testing.expect(object.get("top-p") == null);
}

test "reset forgets the turns and keeps the system prompt" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml }, "S");
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "remember 42");
    conv.reset();
    try testing.expectEqual(@as(usize, 0), conv.turns());
    _ = try conv.reply(&backend, &ui, "what number?");
    try testing.expect(contains(backend.prompt.items, "system\nS"));
    try testing.expect(!contains(backend.prompt.items, "42"));
}

test "a full context drops the oldest turns, keeps the system prompt, and says how many" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"x" ** 80} };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    // budget 100 - 50 = 50 tokens = 200 bytes in the fake; a turn is about 150 bytes
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .ctx_size = 100, .n_predict = 50 }, "S");
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "first");
    try testing.expectEqual(@as(usize, 0), ui.dropped_turns);
    const second = try conv.reply(&backend, &ui, "second");
    try testing.expectEqual(@as(usize, 1), second.answered.dropped);
    try testing.expectEqual(@as(usize, 1), ui.dropped_turns);
    try testing.expect(contains(backend.prompt.items, "system\nS"));
    try testing.expect(contains(backend.prompt.items, "second"));
    try testing.expect(!contains(backend.prompt.items, "first"));
    try testing.expect(backend.prompt.items.len / 4 <= 50);
    try testing.expectEqual(@as(usize, 1), conv.turns());
}

test "a prompt the host refuses as too long counts as not fitting" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"y" ** 80}, .host_ctx = 60 };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    // the app assumes a larger context than the host has
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .ctx_size = 4096, .n_predict = 16 }, null);
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "one");
    _ = try conv.reply(&backend, &ui, "two");
    const third = try conv.reply(&backend, &ui, "three");
    try testing.expect(third.answered.dropped >= 1);
    try testing.expect(contains(backend.prompt.items, "three"));
    try testing.expect(!contains(backend.prompt.items, "one"));
}

test "a message that cannot fit alone is refused and not kept" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .ctx_size = 100, .n_predict = 20 }, null);
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "short");
    const long = try conv.reply(&backend, &ui, "z" ** 600);
    try testing.expect(long.too_long.tokens.? > 80);
    try testing.expectEqual(@as(usize, 1), backend.finished); // nothing generated for it
    try testing.expectEqual(@as(usize, 1), conv.turns()); // the history is as it was
    try testing.expectEqualStrings("short", conv.messages.items[0].content);
    const after = try conv.reply(&backend, &ui, "still here");
    try testing.expectEqual(End.stop, after.answered.end);
}

test "a message too long to send is found out without trying every turn" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{"ok"} };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .ctx_size = 4000, .n_predict = 100 }, null);
    defer conv.deinit();
    for (0..10) |_| _ = try conv.reply(&backend, &ui, "a short message");
    const before = backend.prompts_set;
    const long = try conv.reply(&backend, &ui, "z" ** 20000);
    try testing.expect(long == .too_long);
    try testing.expectEqual(before + 2, backend.prompts_set); // the whole history, then the message alone
    try testing.expectEqual(@as(usize, 10), conv.turns());
}

test "the host ending with length before n_predict means the context is full" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "c" }, .length_after = 2 };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml }, null);
    defer conv.deinit();
    const outcome = try conv.reply(&backend, &ui, "hi");
    try testing.expectEqual(End.context_full, outcome.answered.end);
    try testing.expectEqualStrings("ab", ui.shown.items);
    // the partial answer is kept as history
    try testing.expectEqualStrings("ab", conv.messages.items[conv.messages.items.len - 1].content);
}

test "n_predict ends an answer, and a limit set by the context is context full" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b", "c", "d" } };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .n_predict = 2 }, null);
    defer conv.deinit();
    const outcome = try conv.reply(&backend, &ui, "hi");
    try testing.expectEqual(End.n_predict, outcome.answered.end);
    try testing.expectEqual(@as(u32, 2), outcome.answered.tokens);

    // ctx 40 and n_predict 30: the reserve is 20, and a prompt of 13 tokens
    // leaves room for 27, fewer than n_predict
    var small = FakeBackend{ .allocator = testing.allocator, .tokens = &(.{"t"} ** 30) };
    defer small.deinit();
    var conv2 = try Conversation.init(testing.allocator, .{ .template = .chatml, .ctx_size = 40, .n_predict = 30 }, null);
    defer conv2.deinit();
    const limited = try conv2.reply(&small, &ui, "q" ** 5);
    try testing.expectEqual(@as(u32, 13), limited.answered.prompt_tokens);
    try testing.expectEqual(End.context_full, limited.answered.end);
    try testing.expectEqual(@as(u32, 40 - limited.answered.prompt_tokens), limited.answered.tokens);
}

test "stop texts and the template's end of turn end the answer unseen" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "one ", "<|im", "_end|>", "more" } };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml }, null);
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "hi");
    try testing.expectEqualStrings("one ", ui.shown.items);

    ui.shown.clearRetainingCapacity();
    var with_stop = try Conversation.init(testing.allocator, .{ .template = .chatml, .stops = &.{"ne"} }, null);
    defer with_stop.deinit();
    _ = try with_stop.reply(&backend, &ui, "hi");
    try testing.expectEqualStrings("o", ui.shown.items);
}

test "the model's own template is asked for, with chatml when it has none" {
    var backend = FakeBackend{ .allocator = testing.allocator };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{}, null);
    defer conv.deinit();
    _ = try conv.reply(&backend, &ui, "hi \"you\"");
    try testing.expectEqualStrings("JINJA{\"messages\":[{\"role\":\"user\",\"content\":\"hi \\\"you\\\"\"}],\"add_generation_prompt\":true}", backend.prompt.items);

    backend.has_template = false;
    var plain = try Conversation.init(testing.allocator, .{}, null);
    defer plain.deinit();
    _ = try plain.reply(&backend, &ui, "a");
    _ = try plain.reply(&backend, &ui, "b");
    try testing.expectEqual(@as(usize, 1), ui.fallbacks); // said once
    try testing.expect(std.mem.startsWith(u8, backend.prompt.items, "<|im_start|>user\na<|im_end|>\n"));
}

test "a template that rejects the conversation keeps nothing" {
    var backend = FakeBackend{ .allocator = testing.allocator, .template_fails = true };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{}, "S");
    defer conv.deinit();
    try testing.expectEqual(Outcome.template_failed, try conv.reply(&backend, &ui, "hi"));
    try testing.expectEqual(@as(usize, 1), conv.messages.items.len);
}

test "a host failure mid-answer drops the unanswered message and finishes the generation" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "a", "b" }, .fail_at = 1 };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml }, null);
    defer conv.deinit();
    try testing.expectError(error.BackendFailed, conv.reply(&backend, &ui, "hi"));
    try testing.expectEqual(@as(usize, 0), conv.messages.items.len);
    try testing.expectEqual(@as(usize, 1), backend.finished);
}

test "a thinking model's thought is shown as thinking and left out of the history" {
    // a named template never opens the block: the model opens it itself
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "<think>", "Two and", " two.</th", "ink>\n\n", "Four." } };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .template = .chatml, .stops = &.{"two"} }, null);
    defer conv.deinit();
    const first = try conv.reply(&backend, &ui, "2+2?");
    // the stop text "two" is in the thought only: it does not end the answer
    try testing.expectEqualStrings("(Two and)( two.)Four.", ui.shown.items);
    try testing.expectEqual(@as(u32, 5), first.answered.tokens);
    try testing.expectEqualStrings("Four.", conv.messages.items[1].content);
    _ = try conv.reply(&backend, &ui, "sure?");
    try testing.expect(contains(backend.prompt.items, "<|im_start|>assistant\nFour.<|im_end|>\n"));
    try testing.expect(!contains(backend.prompt.items, "Two and"));
}

test "a prompt that opens the think block starts the answer in thought; cut off, it is all thought" {
    var backend = FakeBackend{ .allocator = testing.allocator, .tokens = &.{ "hmm", " more", " still" }, .prompt_suffix = "<think>\n" };
    defer backend.deinit();
    var ui = FakeUi.init();
    defer ui.deinit();
    var conv = try Conversation.init(testing.allocator, .{ .n_predict = 2 }, null);
    defer conv.deinit();
    const outcome = try conv.reply(&backend, &ui, "hi");
    try testing.expectEqual(End.n_predict, outcome.answered.end);
    try testing.expectEqualStrings("(hmm)( more)", ui.shown.items);
    try testing.expectEqualStrings("", conv.messages.items[1].content);
}
