"""`wasi_ephemeral_nn`: the legacy WASI-NN ABI as WasmEdge's GGML plugin speaks it, on our
engine. Every function takes i32s and returns an error code; the cause of an error goes to
the log, and Python exceptions never cross into wasm.

Three lifetimes, as in the rest of the runtime:
- `GraphRegistry`: one per process. Preloaded names (`--nn-preload`) and loaded models.
- `NNSession`: one per app instance (one HTTP request, or one `run-wasm`). Its execution
  contexts, and whether its request was cancelled.
- `ExecutionContext`: one per `init_execution_context`: options, prompt, running sequence.

One module per part, each importing only those above it:

    errors      Errno (the codes the functions return) and NNError
    metadata    the metadata JSON's keys and how their values are checked
    graphs      GraphRegistry and the preloads; SessionGraphs, an instance's view with the
                models it holds from a GraphSource (the server's library)
    sessions    NNSession and ExecutionContext
    functions   the host functions themselves, and their signatures
"""

from llamaedge.runtime.nn.errors import Errno, NNError
from llamaedge.runtime.nn.functions import MODULE, SIGNATURES, Functions, write_output
from llamaedge.runtime.nn.graphs import (GraphLease, GraphRegistry, Graphs, GraphSource, Preload, SessionGraphs,
                                         parse_preload)
from llamaedge.runtime.nn.sessions import ExecutionContext, NNSession

__all__ = [
    "MODULE", "SIGNATURES", "Errno", "ExecutionContext", "Functions", "GraphLease", "GraphRegistry", "GraphSource",
    "Graphs", "NNError", "NNSession", "Preload", "SessionGraphs", "parse_preload", "write_output",
]
