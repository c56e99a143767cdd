"""llamaedge: local LLM chat and an OpenAI-compatible API, served by WebAssembly apps on a
WASI-NN runtime over llama.cpp."""

__version__ = "0.1.0"
