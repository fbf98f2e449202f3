"""Issue 23, item 3: `langgraft launch` validates what it hands to ssh and torchrun. A hostfile
line is a host name, never an ssh option; ports and --env pairs are checked; every error is one
line `langgraft launch: error: ...` naming the hostfile line. Dry runs only (nothing starts)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from langgraft.__main__ import main

pytestmark = pytest.mark.timeout(60)

# (hostfile text, extra launch options, message the one error line must hold)
CASES = {
    "a host that is an ssh option": (
        "gpu-a\n-oProxyCommand=touch${IFS}/tmp/pwned\n",
        [],
        "HOSTS:2: '-oProxyCommand=",
    ),
    "an option after user@": ("gpu-a\nroot@-oProxyCommand=x\n", [], "HOSTS:2: 'root@-oProxy"),
    "host:slots": ("node1:8\nnode2:8\n", [], "HOSTS:1: 'node1:8' is not a host name"),
    "a shell metacharacter": ("gpu-a\ngpu-b;reboot\n", [], "HOSTS:2: 'gpu-b;reboot'"),
    "--master-port 70000": ("gpu-a\n", ["--master-port", "70000"], "--master-port 70000: a TCP"),
    "--master-port 0": ("gpu-a\n", ["--master-port", "0"], "--master-port 0: a TCP port"),
    "--ssh-port -1": ("gpu-a\n", ["--ssh-port", "-1"], "--ssh-port -1: a TCP port is 1..65535"),
    "--env =x": ("gpu-a\n", ["--env", "=x"], "--env '=x': expected KEY=VALUE"),
    "--env 1A=x": ("gpu-a\n", ["--env", "1A=x"], "--env '1A=x': expected KEY=VALUE"),
    "--env A B=x": ("gpu-a\n", ["--env", "A B=x"], "--env 'A B=x': expected KEY=VALUE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_launch_is_one_line_naming_the_place(case: str, tmp_path: Path, capsys) -> None:
    text, extra, message = CASES[case]
    hosts = tmp_path / "hosts"
    hosts.write_text(text)
    argv = ["launch", "--hostfile", str(hosts), *extra, "--dry-run", "--", "train", "--config",
            "r.yaml"]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no node command printed
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("langgraft launch: error: "), lines[0]
    assert message.replace("HOSTS", str(hosts)) in lines[0], lines[0]


def test_good_hosts_still_pass(tmp_path: Path, capsys) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("gpu-a.example.org\nalice@10.0.0.7\nnode_3\n::1\n")
    argv = ["launch", "--hostfile", str(hosts), "--ssh-port", "65535", "--master-port", "1",
            "--env", "_X1=a=b", "--dry-run", "--", "train", "--config", "r.yaml"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("ssh -o BatchMode=yes -p 65535 gpu-a.example.org ")
    assert shlex.split(lines[3])[5] == "alice@10.0.0.7"
    assert "_X1=a=b" in lines[7] and "--master_addr gpu-a.example.org" in lines[7]
