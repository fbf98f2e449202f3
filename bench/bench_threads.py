"""1 vs 2 torch threads (active / passive OpenMP wait) on a 4-layer training loop, without and
with one busy loop beside; one subprocess per arm, arms alternated per round.

    python bench/bench_threads.py [ROUNDS]
"""

import os
import subprocess
import sys

PY = sys.executable
WORK = r"""
import time, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
c = LlamaConfig(vocab_size=8000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512)
m = LlamaForCausalLM(c)
opt = torch.optim.AdamW(m.parameters(), 1e-4)
x = torch.randint(0, 8000, (4, 256))
t = time.perf_counter()
for _ in range(6):
    loss = m(input_ids=x, labels=x).loss; loss.backward(); opt.step(); opt.zero_grad()
print(f"{time.perf_counter()-t:.2f}")
"""
ARMS = {
    "1": {"OMP_NUM_THREADS": "1"},
    "2": {"OMP_NUM_THREADS": "2"},
    "2p": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}


def arm(env):
    out = subprocess.run(
        [PY, "-c", WORK], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    return float(out.stdout.strip().split()[-1])


for cond in ["idle", "busy"]:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if cond == "busy" else None
    res = {k: [] for k in ARMS}
    for rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        keys = list(ARMS) if rnd % 2 == 0 else list(ARMS)[::-1]
        for k in keys:
            res[k].append(arm(ARMS[k]))
    la = open("/proc/loadavg").read().split()[0]
    if hog:
        hog.kill()
    print(cond, "load1", la, {k: v for k, v in res.items()}, flush=True)
