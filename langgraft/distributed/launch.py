"""`langgraft launch`: Colossal's `colossalai run --hostfile` convenience over torchrun.

    langgraft launch --hostfile hosts.txt --nproc-per-node 8 -- train --config R.yaml
    langgraft launch --hostfile hosts.txt --nproc-per-node 8 --dry-run -- train --config R.yaml

The hostfile lists one host per line (`#` comments and blank lines ignored); the first host is
the rendezvous master. For node i it runs, over ssh (in the same working directory, with the
same Python), or directly when the host is this machine:

    python -m torch.distributed.run --nnodes H --node_rank i --nproc_per_node N \\
        --master_addr HOST0 --master_port PORT -m langgraft train ...

which is exactly the command to type by hand on each node without this wrapper. If one node's
torchrun fails (a rank died: torchrun names it and stops that node's other ranks), the other
nodes are stopped too, so the job fails within seconds instead of hanging in a collective.
The code, data and output directory must be at the same paths on every node (a shared
filesystem: checkpoints are written by every rank into one directory).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from langgraft.errors import UserError

log = logging.getLogger(__name__)

# Environment that follows the job to every node (plus --env KEY=VALUE).
FORWARD_ENV_PREFIXES = ("NCCL_", "GLOO_", "LANGGRAFT_", "HF_", "TORCH_", "CUDA_VISIBLE_DEVICES",
                        "OMP_NUM_THREADS", "PYTHONPATH")  # fmt: skip
_LOCAL = ("localhost", "127.0.0.1", "::1")
_GRACE_S = 10.0


# [user@]host: a DNS name or IPv4 address (letters, digits, '-', '_', '.'; no leading '-', so a
# hostfile line can never become an ssh option such as -oProxyCommand=...), or an IPv6 address.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?{_LABEL}(?:\.{_LABEL})*\.?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_host(host: str, where: str) -> str:
    """`host` if it is a host name ssh and torchrun take as one; else a UserError at `where`."""
    if _HOST.fullmatch(host):
        return host
    try:
        ipaddress.IPv6Address(host.rpartition("@")[2])
        return host
    except ValueError:
        pass
    if host.startswith("-"):
        why = "starts with '-' (ssh would read it as an option)"
    elif ":" in host:
        why = "a host name holds no port or slot count (use --nproc-per-node, --ssh-port)"
    else:
        why = "expected [user@]host: letters, digits, '-', '_' and '.'"
    raise UserError(f"{where}: {host!r} is not a host name: {why}")


def check_port(value: int | None, option: str) -> None:
    if value is not None and not 1 <= value <= 65535:
        raise UserError(f"{option} {value}: a TCP port is 1..65535")


def read_hostfile(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--hostfile {path}: cannot read it ({e})") from None
    hosts = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise UserError(f"{path}:{n}: expected one host name per line, got {text!r}")
        hosts.append(check_host(text, f"{path}:{n}"))
    if not hosts:
        raise UserError(f"--hostfile {path}: no hosts listed")
    return hosts


def is_local(host: str) -> bool:
    return host in _LOCAL or host in (socket.gethostname(), socket.getfqdn())


def node_commands(args: argparse.Namespace, hosts: list[str]) -> list[list[str]]:
    """The argv that runs node i (ssh ... for a remote host)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV_PREFIXES)}
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(k):
            raise UserError(
                f"--env {item!r}: expected KEY=VALUE with KEY a variable name (letters, digits, "
                "'_', not starting with a digit)"
            )
        env[k] = v
    cmds = []
    for i, host in enumerate(hosts):
        torchrun = [
            args.python, "-m", "torch.distributed.run", "--nnodes", str(len(hosts)),
            "--node_rank", str(i), "--nproc_per_node", str(args.nproc_per_node),
            "--master_addr", hosts[0], "--master_port", str(args.master_port),
            "-m", "langgraft", *args.job,
        ]  # fmt: skip
        if is_local(host):
            cmds.append(["env", *(f"{k}={v}" for k, v in sorted(env.items())), *torchrun])
            continue
        remote = " ".join(
            ["cd", shlex.quote(os.getcwd()), "&&", "env",
             *(shlex.quote(f"{k}={v}") for k, v in sorted(env.items())),
             *(shlex.quote(a) for a in torchrun)]
        )  # fmt: skip
        ssh = ["ssh", "-o", "BatchMode=yes"] + (["-p", str(args.ssh_port)] if args.ssh_port else [])
        cmds.append([*ssh, host, remote])
    return cmds


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def run_nodes(cmds: list[list[str]], hosts: list[str]) -> int:
    """Start every node; the first failure stops the others. Returns the job's exit code."""
    # Own process group per node, so stopping a node stops its torchrun and all its ranks.
    procs = [subprocess.Popen(c, start_new_session=True) for c in cmds]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                print(
                    f"langgraft launch: node {i} ({hosts[i]}) failed with exit code {codes[i]} "
                    "(its torchrun summary above names the rank); stopping the other nodes",
                    file=sys.stderr,
                )
                _stop(procs)
                return int(codes[i]) if codes[i] and codes[i] > 0 else 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(procs)
        raise


class _JobArgsError(Exception):
    pass


def _train_args(job: list[str]) -> argparse.Namespace:
    """The job's `train` options, parsed by train's own parser (overrides included)."""
    from langgraft.train.cli import register

    sub = argparse.ArgumentParser(prog="langgraft", add_help=False).add_subparsers()
    register(sub, "train")
    parser = sub.choices["train"]

    def error(message: str) -> None:  # argparse would print usage and exit
        raise _JobArgsError(message)

    parser.error = error  # type: ignore[method-assign]
    try:
        return parser.parse_args(job[1:])
    except _JobArgsError as e:
        raise UserError(f"the command after --: train: {e}") from None


def check_train_layout(job: list[str], world: int) -> None:
    """A `train` job's layout (plugin, tp, zero, pp) against the job's world size, here, before
    any rank starts: under torchrun every rank would print the same refusal and torchrun its
    failure summary after them. Needs the recipe (and, for tp, the model's config.json) at the
    same path here, as on every node; where the recipe is not here, the ranks check it."""
    from langgraft.distributed.dims import parallel_dims
    from langgraft.train.recipe import load_recipe

    if not job or job[0] != "train":
        return
    args = _train_args(job)
    if args.plan:
        return
    if not Path(args.config).is_file():
        log.info("layout not checked before the start: %s is not on this machine", args.config)
        return
    parallel_dims(load_recipe(args.config, args.overrides), world, str(args.config))


def run(args: argparse.Namespace) -> int:
    if not args.job:
        raise UserError("nothing to launch: put the langgraft command after --, e.g. "
                        "-- train --config R.yaml")  # fmt: skip
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc-per-node {args.nproc_per_node}: must be >= 1")
    check_port(args.master_port, "--master-port")
    check_port(args.ssh_port, "--ssh-port")
    hosts = read_hostfile(args.hostfile)
    cmds = node_commands(args, hosts)
    check_train_layout(args.job, len(hosts) * args.nproc_per_node)
    if args.dry_run:
        for i, c in enumerate(cmds):
            print(f"# node {i}: {hosts[i]}")
            print(shlex.join(c))
        return 0
    log.info("launching %d node(s) x %d process(es)", len(hosts), args.nproc_per_node)
    return run_nodes(cmds, hosts)


def register(subparsers: Any, name: str = "launch") -> None:
    p = subparsers.add_parser(
        name,
        help="run a langgraft command on every host of a hostfile (torchrun per node, over ssh)",
        description="Colossal's `colossalai run --hostfile`: one torchrun per host with a static "
        "rendezvous on the first host. Everything after -- is the langgraft command.",
    )
    p.add_argument("--hostfile", type=Path, required=True,
                   help="one host per line; the first is the rendezvous master")  # fmt: skip
    p.add_argument("--nproc-per-node", type=int, default=1,
                   help="processes (GPUs) per host (default: 1)")  # fmt: skip
    p.add_argument("--master-port", type=int, default=29500,
                   help="rendezvous port on the first host (default: 29500)")  # fmt: skip
    p.add_argument("--ssh-port", type=int, default=None, help="ssh port (default: ssh's own)")
    p.add_argument("--python", default=sys.executable,
                   help="Python interpreter on every host (default: this one, same path)")  # fmt: skip
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for every rank (repeatable); NCCL_*, GLOO_*, HF_*, "
                   "TORCH_*, LANGGRAFT_*, OMP_NUM_THREADS, PYTHONPATH and "
                   "CUDA_VISIBLE_DEVICES are forwarded already")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="print each node's command instead of running it")  # fmt: skip
    # dest "job", not "command": the top-level parser's "command" names the subcommand, which
    # the one-line error prefix reads ("langgraft launch: error: ...").
    p.add_argument("job", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="-- then the langgraft command, e.g. -- train --config R.yaml")  # fmt: skip
    p.set_defaults(func=_run_stripped)


def _run_stripped(args: argparse.Namespace) -> int:
    if args.job and args.job[0] == "--":
        args.job = args.job[1:]
    return run(args)
