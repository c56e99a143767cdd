"""Defaults of the limits the command line shows and the server, the runtime and the engine
apply: each has its home here, a module that imports nothing, so that the CLI can show them
without importing the engine or wasmtime."""

# A model's context when none is asked for: its training context, at most this many tokens.
DEFAULT_CTX_SIZE = 4096
# Linear memory an app's run may use (a mounted app's policy may set its own).
APP_MEMORY_MAX_BYTES = 256 * 1024 * 1024
QUEUE_MAX_PER_SLOT = 4  # the default --queue-max: this many waiting requests per slot
DRAIN_S = 20.0  # the default --drain-s; below Kubernetes' default 30 s termination grace period
# The largest request body: the host reads at most one byte more and gives every app this
# limit as LLAMAEDGE_MAX_BODY_BYTES, so host and apps refuse at the same size. (The apps'
# built-in default is for other hosts, which may not set the variable.) Room for a long
# conversation with a few inline images.
MAX_BODY_BYTES = 8 * 1024 * 1024

# A model unused this long is unloaded (LibraryConfig.idle_unload_s). llama-server's
# --sleep-idle-seconds is off by default: it serves one model a process. A library holds
# several, on a machine that also runs other programs, so we unload as Ollama does (its
# keep_alive is 5 minutes): a model left alone gives its memory back. Coming back costs a
# reload, and with mmap the weights are usually still in the page cache then, so the reload
# is mostly the context's allocation and one warm-up token. 0 turns it off (a server whose
# every first token counts).
IDLE_UNLOAD_S = 300.0
# llama-server's --models-max default: at most this many models loaded at once (0: no limit
# but memory).
MODELS_MAX = 4


def queue_limit(slots: int, queue_max: int | None) -> int:
    """Requests that may wait beyond the slots: --queue-max, else QUEUE_MAX_PER_SLOT per slot."""
    return QUEUE_MAX_PER_SLOT * slots if queue_max is None else queue_max

# The key-value store's quota of the host's own app (the chat server keeps stored responses
# there); a mounted app has none unless its policy grants `kv`.
APP_KV_MAX_BYTES = 256 * 1024 * 1024

# A tool's call (docs/tools.md): its linear memory and wall time unless its manifest says
# otherwise (small: a tool is one function call, not a server), and the most it may write
# on stdout (its result goes into a prompt or an MCP message).
TOOL_MEMORY_MAX_BYTES = 64 * 1024 * 1024
TOOL_WALL_TIME_S = 10.0
TOOL_OUTPUT_MAX_BYTES = 1024 * 1024
# The server's tool loop (docs/tools.md): model steps per request at most, unless the request
# asks for fewer (`llamaedge_max_steps`). The last step may not call tools, so it answers.
TOOL_LOOP_STEPS_MAX = 8
# Calls that run inside calls (`llamaedge.call`: an app calls a tool, which calls a tool...):
# at most this many deep, so a chain of calls stays short and its time bounded.
TOOL_CALL_DEPTH_MAX = 4
# An image in a prompt (WASI-NN's `<img src="data:...">` tags and `image` option; the API's
# image parts): at most this many bytes once decoded from base64, and at most this many
# pixels (width x height), checked before the projector resizes it. A phone photo (12 MP,
# 3-5 MB as JPEG) passes; the pixel bound keeps a small file that decodes to a huge bitmap
# (a decompression bomb) from taking gigabytes: 3 bytes a pixel, 100 MB at most.
IMAGE_BYTES_MAX = 5 * 1024 * 1024  # below MAX_BODY_BYTES: base64 makes 4 bytes of 3
IMAGE_PIXELS_MAX = 33_554_432  # 32 Mi pixels: 8192 x 4096
# `serve --allow-image-urls`: the whole fetch of one image URL (connect, redirects, body), as
# a request's wait on it; IMAGE_BYTES_MAX bounds what it may bring.
IMAGE_URL_TIMEOUT_S = 10.0
