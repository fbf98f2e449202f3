"""Run `langgraft train` in this process (under torchrun) and record the private (anonymous)
resident memory that building and loading the model add: RssAnon just before `build_model` and
its peak while it runs (sampled every millisecond by a thread); then the same peak during each
training step. File-backed pages of the mmapped
safetensors (RssFile) are the page cache that every rank shares; their peak is reported, not
counted as a copy. The modelling code is imported before the measurement (imports are not
weights). Writes PROBE_OUT/rank{R}.json. Used by test_loading.py and test_accumulation.py; not a
test itself."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.anon = self.file = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.anon = max(self.anon, _status_kb("RssAnon"))
            self.file = max(self.file, _status_kb("RssFile"))
            time.sleep(0.001)


def main() -> int:
    from langgraft.__main__ import main as langgraft_main
    from langgraft.train import build

    record: dict = {}
    build_model = build.build_model

    def probed(recipe, *args, **kwargs):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(recipe.model)
        AutoModelForCausalLM._model_mapping[type(config)]  # imports the modelling code
        before = _status_kb("RssAnon"), _status_kb("RssFile")
        sampler = PeakSampler()
        sampler.start()
        try:
            model = build_model(recipe, *args, **kwargs)
        finally:
            sampler.stop.set()
            sampler.join()
        record.update(anon_before_kb=before[0], anon_peak_kb=sampler.anon,
                      anon_after_kb=_status_kb("RssAnon"), file_before_kb=before[1],
                      file_peak_kb=sampler.file)  # fmt: skip
        return model

    build.build_model = probed
    from langgraft.train import trainer

    step = trainer.Trainer._train_step
    record["steps"] = []

    def probed_step(self, *args, **kwargs):
        sampler = PeakSampler()
        sampler.start()
        try:
            return step(self, *args, **kwargs)
        finally:
            sampler.stop.set()
            sampler.join()
            record["steps"].append(sampler.anon)

    trainer.Trainer._train_step = probed_step

    rc = langgraft_main(sys.argv[1:])
    out = Path(os.environ["PROBE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    r = int(os.environ.get("RANK", "0"))
    (out / f"rank{r}.json").write_text(json.dumps({"rc": rc, **record}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
