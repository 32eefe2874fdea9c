"""A stand-in for Hugging Face's ``spaces`` package (ZeroGPU) in tests: ``GPU(duration)`` runs the
function it wraps in another process, started fresh (spawn), its arguments and everything it
yields pickled across, as ZeroGPU does with the process that holds the lent GPU. No GPU is
involved: what is tested is that the work crosses the process boundary."""

from __future__ import annotations

import multiprocessing
import os
import pickle


class StandIn:
    """One stand-in ``spaces`` module; ``calls`` records (duration, function name, process id)."""

    def __init__(self):
        self.calls: list[tuple[int, str, int]] = []

    def GPU(self, duration: int = 60):  # noqa: N802 - the name spaces gives it
        def wrap(fn):
            def run(*args):
                pickle.dumps(args)  # an argument that does not pickle fails here, as on ZeroGPU
                context = multiprocessing.get_context("spawn")
                queue = context.Queue()
                child = context.Process(target=_child, args=(fn, args, queue), daemon=True)
                child.start()
                try:
                    while True:
                        kind, value = queue.get(timeout=600)
                        if kind == "pid":
                            self.calls.append((duration, fn.__name__, value))
                        elif kind == "value":
                            yield pickle.loads(value)
                        elif kind == "error":
                            raise RuntimeError(f"the GPU process failed: {value}")
                        else:
                            return
                finally:
                    child.join(60)
            return run
        return wrap


def _child(fn, args, queue) -> None:
    queue.put(("pid", os.getpid()))
    try:
        for value in fn(*args):
            # pickled here, whole (a queue would share tensors' memory, which outlives no process)
            queue.put(("value", pickle.dumps(value)))
        queue.put(("done", None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
        queue.put(("error", repr(exc)))
