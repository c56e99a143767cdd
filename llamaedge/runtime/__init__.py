"""The WebAssembly runtime (our WasmEdge): wasmtime + WASI preview 1 + WASI-NN over the
engine. The only package that imports wasmtime."""

from llamaedge.runtime.host import App, AppTrap, RunLimits, Runtime
from llamaedge.runtime.policy import AppPolicy, PolicyBreach
from llamaedge.runtime.wagi import ResponseStream, WagiRequest, run_wagi
from llamaedge.runtime.nn import GraphRegistry, NNSession, Preload, parse_preload

__all__ = [
    "App",
    "AppPolicy",
    "AppTrap",
    "GraphRegistry",
    "NNSession",
    "PolicyBreach",
    "Preload",
    "ResponseStream",
    "RunLimits",
    "Runtime",
    "WagiRequest",
    "parse_preload",
    "run_wagi",
]
