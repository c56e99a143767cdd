//! What an app assumes when its host passes nothing: one home for each
//! built-in default. llamaedge always passes its own values (`serve` gives
//! every HTTP app the loaded model's context, its slots and its body limit as
//! LLAMAEDGE_* variables; `llamaedge chat` gives llama-chat `--ctx-size`), so
//! these matter only under another host (WasmEdge, say), where they mirror
//! llamaedge's own defaults.

/// The graph a model is preloaded as (WasmEdge's `--nn-preload default:...`),
/// and the model id the chat server names when the host names none.
pub const graph = "default";

/// The model's context, in tokens (llamaedge's `--ctx-size` default).
pub const ctx_size: u32 = 4096;

/// The largest request body an HTTP app reads (llamaedge's `MAX_BODY_BYTES`).
pub const max_body_bytes: u64 = 8 << 20;

/// The host's decoding slots (`serve --parallel`): how many choices of one
/// request generate at once.
pub const parallel: u32 = 8;

/// The largest image in a request, decoded, and its most pixels (llamaedge's
/// `IMAGE_BYTES_MAX`, `IMAGE_PIXELS_MAX`).
pub const image_bytes_max: u64 = 5 << 20;
pub const image_pixels_max: u64 = 32 << 20;
