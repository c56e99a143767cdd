//! What other apps import from the chat server, as the module `chat_server`
//! (wasm-apps/build.py passes it with `--dep chat_server -Mchat_server=...`):
//! the host bindings, WAGI responses with OpenAI-style errors, the named
//! prompt templates, the token text filter, the thinking/answer splitter,
//! what every app's `main` sets up, and the scripted backend that apps'
//! tests drive their logic with.
//! One copy of each, shared, so that every app talks to the host the same way.

pub const nn = @import("nn.zig");
pub const http = @import("http.zig");
pub const openai = @import("openai.zig");
pub const templates = @import("templates.zig");
pub const stream = @import("stream.zig");
pub const reasoning = @import("reasoning.zig");
pub const app = @import("app.zig");
pub const test_support = @import("test_support.zig");
