"""Run `langgraft train` in this process (under torchrun) while counting, per training step,
the host reads of tensors (item, tolist, float/int/bool, cuda.synchronize) made by the main
thread and the collectives langgraft issues (c10d all-reduce, broadcast, object collectives,
barriers, DTensor full_tensor); FSDP2's and TP's own per-layer traffic is not counted. Writes
PROBE_OUT/rank{R}.json: one record per step. Used by test_host_syncs.py; not a test itself."""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

COUNTS: collections.Counter = collections.Counter()
IN_STEP = False


def _count(owner, name: str, key: str) -> None:
    orig = getattr(owner, name)

    def counted(*args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            COUNTS[key] += 1
            if os.environ.get("PROBE_TRACE") == key and IN_STEP:  # where a read comes from, when debugging
                import traceback

                print("".join(traceback.format_stack(limit=30)), file=sys.stderr)
        return orig(*args, **kwargs)

    setattr(owner, name, counted)


for _name in ("item", "tolist", "__float__", "__int__", "__bool__"):
    _count(torch.Tensor, _name, "host_read")
_count(torch.cuda, "synchronize", "host_read")
for _name in ("all_reduce", "broadcast", "all_gather_object", "broadcast_object_list",
              "gather_object", "barrier", "all_gather"):  # fmt: skip
    _count(dist, _name, "collective")
_count(DTensor, "full_tensor", "collective")  # a DTensor reduced to one tensor: an all-reduce


def main() -> int:
    from langgraft.__main__ import main as langgraft_main
    from langgraft.train import trainer

    records: list[dict] = []
    step = trainer.Trainer._train_step

    def probed(self, plan, run, metrics):
        global IN_STEP
        before = COUNTS.copy()
        IN_STEP = (self.global_step + 1) % 3 != 0
        loss = step(self, plan, run, metrics)
        IN_STEP = False
        diff = {k: COUNTS[k] - before[k] for k in ("host_read", "collective")}
        records.append({"step": self.global_step, "logged": loss == loss, **diff})
        return loss

    trainer.Trainer._train_step = probed
    rc = langgraft_main(sys.argv[1:])
    out = Path(os.environ["PROBE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    r = int(os.environ.get("RANK", "0"))
    (out / f"rank{r}.json").write_text(json.dumps({"rc": rc, "steps": records}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
