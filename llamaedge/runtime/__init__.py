"""The WebAssembly runtime (our WasmEdge): wasmtime + WASI preview 1 + WASI-NN over the
engine. The only package that imports wasmtime."""

from llamaedge.runtime.breaches import PolicyBreach
from llamaedge.runtime.host import AppTrap, Runtime
from llamaedge.runtime.policy import AppPolicy
from llamaedge.runtime.run import App, RunLimits
from llamaedge.runtime.wagi import ResponseStream, WagiRequest, run_wagi
from llamaedge.runtime.nn import GraphLease, GraphRegistry, GraphSource, NNSession, Preload, SessionGraphs, parse_preload

__all__ = [
    "App",
    "AppPolicy",
    "AppTrap",
    "GraphLease",
    "GraphRegistry",
    "GraphSource",
    "NNSession",
    "PolicyBreach",
    "Preload",
    "ResponseStream",
    "SessionGraphs",
    "RunLimits",
    "Runtime",
    "WagiRequest",
    "parse_preload",
    "run_wagi",
]
