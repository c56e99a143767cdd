//! The module `shared`: the Zig code every app imports
//! (wasm-apps/build.py passes it with `--dep shared -Mshared=...`), one copy
//! of each, so that every app talks to the host the same way. From the
//! bottom up:
//! - `defaults`: what an app assumes when its host passes nothing;
//! - `nn`: the host's imports (WASI-NN, `llamaedge.chat_template`) as a
//!   `Backend`, and what the host says of a context as `nn.Info`;
//! - `kv`: the host's key-value store (`llamaedge_kv`);
//! - `api_error`: an error as the HTTP apps answer it, and the `Diagnostic`
//!   request parsers fill;
//! - `http`: WAGI, the request body and the response heads;
//! - `templates` (with `python`, how the reference templates write text) and
//!   `template_request`, the host's chat_template request;
//! - `stream`: the token text filter; `reasoning`: the thinking/answer splitter;
//! - `app`: what every app's `main` sets up;
//! - `tool`: a tool's side of the contract (JSON in on stdin, JSON out);
//! - `fetch`: the host's HTTP GET (`llamaedge_http`), for granted hosts only;
//! - `call`: a mounted tool or app, called by name (`llamaedge.call`);
//! - `test_support`: the scripted backend that apps' tests drive their logic with.

pub const defaults = @import("defaults.zig");
pub const nn = @import("nn.zig");
pub const kv = @import("kv.zig");
pub const api_error = @import("api_error.zig");
pub const http = @import("http.zig");
pub const templates = @import("templates.zig");
pub const python = @import("python.zig");
pub const template_request = @import("template_request.zig");
pub const stream = @import("stream.zig");
pub const reasoning = @import("reasoning.zig");
pub const app = @import("app.zig");
pub const tool = @import("tool.zig");
pub const fetch = @import("fetch.zig");
pub const call = @import("call.zig");
pub const test_support = @import("test_support.zig");

// Zig runs the tests of the module under test only: `build.py --test` tests
// this module on its own, and this pulls in every file's tests.
test {
    @import("std").testing.refAllDecls(@This());
}
