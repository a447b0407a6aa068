"""Shared sockets end to end: the real circusd binds ``[socket:NAME]`` sections and its
workers accept on them.

Every test binds port 0 (or a Unix path in its own temp dir) and reads the port back
from ``listsockets``. The workers (``fixtures/sock_worker.py``) answer each client with
what they inherited: descriptor, inode, O_NONBLOCK, SO_REUSEPORT, SO_BINDTODEVICE, so the
assertions are about the socket as the worker sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, pid_alive, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon

FIXTURES = Path(__file__).parent.parent / "fixtures"
WORKER = f"{PYTHON} {FIXTURES / 'sock_worker.py'}"
Start = Callable[..., Daemon]


def listsockets(d: Daemon) -> list[dict[str, Any]]:
    reply = d.call({"command": "listsockets"})
    assert reply["status"] == "ok", reply
    return list(reply["sockets"])


def entry(d: Daemon, name: str) -> dict[str, Any]:
    return next(s for s in listsockets(d) if s["name"] == name)


def ask(address: Any, family: int = socket.AF_INET, timeout: float = 10.0) -> dict[str, Any]:
    """Connect, read the worker's one JSON line."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


def ask_tcp(d: Daemon, name: str, seen: list[int]) -> dict[str, Any]:
    sock = entry(d, name)
    family = socket.AF_INET6 if ":" in sock["host"] else socket.AF_INET
    answer = ask((sock["host"], sock["port"]), family)
    seen.append(answer["pid"])
    return answer


def fd_inode(pid: int, fd: int) -> int:
    return os.stat(f"/proc/{pid}/fd/{fd}").st_ino


def fd_inodes(pid: int) -> set[int]:
    """The inodes of every descriptor *pid* holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            inodes.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
    return inodes


def listening_ports(port: int) -> list[str]:
    """Lines of ``ss -ltnH`` for *port*: one per listening socket."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10).stdout
    return [line for line in out.splitlines() if line.strip()]


def web(options: str = "", watcher: str = "", cmd_tail: str = "") -> str:
    return (
        f"[socket:web]\nhost = 127.0.0.1\nport = 0\n{options}\n"
        f"[watcher:w]\ncmd = {WORKER} --fd $(circus.sockets.web){cmd_tail}\n"
        f"use_sockets = true\nnumprocesses = 3\n{watcher}\n"
    )


# -- the basics: one socket, several workers ------------------------------------------------


def test_workers_accept_on_the_socket_circusd_bound(circusd: Start, workers: list[int]) -> None:
    d = circusd(web("backlog = 77"))
    [sock] = listsockets(d)
    assert sock["name"] == "web" and sock["host"] == "127.0.0.1" and sock["port"] > 0
    assert sock["backlog"] == 77 and isinstance(sock["fd"], int)
    assert set(sock) == {"fd", "name", "backlog", "host", "port"}
    pids = wait_until(lambda: len(d.pids("w")) == 3 and d.pids("w"), what="3 workers")
    # circusd's descriptor and each worker's inherited one are the same socket
    circusd_inode = fd_inode(d.pid, sock["fd"])
    answers = [ask_tcp(d, "web", workers) for _ in range(12)]
    assert {a["pid"] for a in answers} <= set(pids)
    for answer in answers:
        assert answer["fd"] == sock["fd"] and answer["inode"] == circusd_inode
        assert answer["argv"] == ["--fd", str(sock["fd"])]  # $(circus.sockets.web) expanded
        assert answer["blocking"] is False  # the default: non-blocking
        assert answer["type"] == "SOCK_STREAM" and answer["family"] == "AF_INET"
    # backlog: the kernel's accept queue limit (Send-Q of a listening socket in ss)
    lines = listening_ports(sock["port"])
    assert len(lines) == 1 and lines[0].split()[2] == "77"


def test_processes_without_use_sockets_inherit_nothing(circusd: Start, tmp_path: Path) -> None:
    out = tmp_path / "fds"
    d = circusd(
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n"
        f"[watcher:w]\ncmd = {PYTHON} -c \"import os, sys; "
        f"open(sys.argv[1], 'w').write(' '.join(sorted(os.listdir('/proc/self/fd'))))\" {out}\n"
        "respawn = false\n"
    )
    fd = entry(d, "web")["fd"]
    wait_until(out.exists, what="the child to list its descriptors")
    assert str(fd) not in out.read_text().split()


def test_a_reload_under_load_refuses_no_connection(circusd: Start, workers: list[int]) -> None:
    """The HTTP example under load: 16 threads send requests (at least 2,000, at most
    20,000) for as long as `reload` takes to replace the 4 workers three times. Every
    request gets its answer: the socket never stops listening."""
    import http.client
    import threading
    import time

    example = Path(__file__).parent.parent.parent / "examples"
    text = (example / "http_workers.ini").read_text()
    body = text[text.index("[socket:web]"):]
    body = body.replace("python3 examples/http_worker.py",
                        f"{PYTHON} {example / 'http_worker.py'}")
    body = body.replace("port = 8080", "port = 0")
    assert f"{example / 'http_worker.py'}" in body and "port = 0" in body
    d = circusd(body)
    port = entry(d, "web")["port"]
    before = wait_until(lambda: len(d.pids("web")) == 4 and d.pids("web"), what="4 workers")
    workers.extend(before)

    failures: list[str] = []
    served_by: set[int] = set()
    sent = [0]
    lock = threading.Lock()
    reloaded = threading.Event()

    def next_request() -> int | None:
        with lock:
            if sent[0] >= 20_000 or (sent[0] >= 2_000 and reloaded.is_set()):
                return None
            sent[0] += 1
            return sent[0]

    def client() -> None:
        while (i := next_request()) is not None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/slow?ms=20" if i % 20 == 0 else "/")
                response = conn.getresponse()
                text = response.read().decode()
                conn.close()
                if response.status != 200 or not text.startswith("hello from pid"):
                    raise RuntimeError(f"{response.status} {text!r}")
                with lock:
                    served_by.add(int(text.split()[3]))
            except Exception as exc:  # every kind of failure counts
                with lock:
                    failures.append(repr(exc))

    started = time.monotonic()
    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    reloads: list[dict[str, Any]] = []
    try:
        for n in range(1, 4):
            # spread the reloads over the run: the n-th once 300 * n requests went out
            wait_until(lambda n=n: sent[0] >= 300 * n, what="requests", timeout=30)
            reloads.append(d.call({"command": "reload", "properties": {
                "name": "web", "waiting": True}}, timeout=30))
        last = set(d.pids("web"))
        wait_until(lambda: served_by & last, what="the last workers to answer", timeout=30)
    finally:
        reloaded.set()
        for thread in clients:
            thread.join(timeout=60)
    elapsed = time.monotonic() - started
    print(f"\n{sent[0]} requests, {len(reloads)} reloads, {len(failures)} failed, "
          f"{elapsed:.1f}s, {len(served_by)} worker pids answered")
    assert [r["status"] for r in reloads] == ["ok"] * 3
    assert sent[0] >= 2_000
    assert failures == []
    after = d.pids("web")
    workers.extend(after)
    assert not set(after) & set(before)  # every worker was replaced
    assert served_by & set(before) and served_by & set(after)  # first and last generation


# -- families and types --------------------------------------------------------------------


def test_inet6_on_the_loopback(circusd: Start, workers: list[int]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    d = circusd(
        "[socket:v6]\nhost = ::1\nport = 0\nfamily = AF_INET6\n"
        f"[watcher:w]\ncmd = {WORKER} --fd $(circus.sockets.v6)\nuse_sockets = true\n"
    )
    sock = entry(d, "v6")
    assert sock["host"] == "::1" and sock["port"] > 0
    answer = ask_tcp(d, "v6", workers)
    assert answer["family"] == "AF_INET6" and answer["address"][0] == "::1"


def test_unix_socket_with_octal_umask_removed_on_exit(circusd: Start, short_tmp: Path,
                                                      workers: list[int]) -> None:
    path = short_tmp / "web.sock"
    d = circusd(
        f"[socket:web]\npath = {path}\numask = 077\n"
        f"[watcher:w]\ncmd = {WORKER} --fd $(circus.sockets.web)\nuse_sockets = true\n"
    )
    sock = entry(d, "web")
    assert sock["path"] == str(path) and "host" not in sock and "port" not in sock
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o700  # umask 077 read as octal (0.19 read it as decimal)
    answer = ask(str(path), socket.AF_UNIX)
    workers.append(answer["pid"])
    assert answer["family"] == "AF_UNIX" and answer["fd"] == sock["fd"]
    assert d.stop() == 0
    assert not path.exists()


def test_unix_socket_umask_022(circusd: Start, short_tmp: Path) -> None:
    path = short_tmp / "web.sock"
    circusd(f"[socket:web]\npath = {path}\numask = 022\n[watcher:w]\ncmd = sleep 3600\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755  # srwxr-xr-x


def _stale_socket(path: Path) -> None:
    """Leave a socket file behind, as a crashed daemon would."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def test_an_existing_unix_path_needs_replace(short_tmp: Path) -> None:
    path = short_tmp / "web.sock"
    _stale_socket(path)
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[socket:web]\npath = {path}\n"
                   "[watcher:w]\ncmd = sleep 3600\n")
    result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "[socket:web]" in output and "replace" in output
    assert path.exists()  # nothing removed without replace


def test_replace_removes_a_stale_unix_socket(circusd: Start, short_tmp: Path,
                                             workers: list[int]) -> None:
    path = short_tmp / "web.sock"
    _stale_socket(path)
    with pytest.raises(ConnectionRefusedError):  # nobody listens on a stale socket file
        ask(str(path), socket.AF_UNIX)
    circusd(f"[socket:web]\npath = {path}\nreplace = true\n"
            f"[watcher:w]\ncmd = {WORKER} --fd $(circus.sockets.web)\nuse_sockets = true\n")
    workers.append(ask(str(path), socket.AF_UNIX)["pid"])  # a new socket in its place


def test_replace_never_removes_a_regular_file(short_tmp: Path) -> None:
    path = short_tmp / "precious"
    path.write_text("data")
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[socket:web]\npath = {path}\nreplace = true\n")
    result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "[socket:web]" in result.stdout + result.stderr
    assert path.read_text() == "data"


def test_datagram_socket(circusd: Start, workers: list[int]) -> None:
    d = circusd(
        "[socket:udp]\nhost = 127.0.0.1\nport = 0\ntype = SOCK_DGRAM\n"
        f"[watcher:w]\ncmd = {WORKER} --dgram --fd $(circus.sockets.udp)\nuse_sockets = true\n"
    )
    sock = entry(d, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(10)
        client.sendto(b"ping", ("127.0.0.1", sock["port"]))
        answer = json.loads(client.recv(65536))
    workers.append(answer["pid"])
    assert answer["type"] == "SOCK_DGRAM" and answer["fd"] == sock["fd"]


# -- socket options --------------------------------------------------------------------------


@pytest.mark.parametrize("blocking", [True, False])
def test_blocking_flag_reaches_the_workers(circusd: Start, workers: list[int],
                                           blocking: bool) -> None:
    d = circusd(web(f"blocking = {str(blocking).lower()}"))
    assert ask_tcp(d, "web", workers)["blocking"] is blocking


def test_proto_by_name(circusd: Start, workers: list[int]) -> None:
    d = circusd(web("proto = tcp"))
    assert ask_tcp(d, "web", workers)["proto"] == socket.IPPROTO_TCP


def test_an_unknown_proto_stops_circusd_naming_the_socket(short_tmp: Path) -> None:
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[socket:web]\nhost = 127.0.0.1\nport = 0\n"
                   "proto = nosuchproto\n[watcher:w]\ncmd = sleep 3600\n")
    result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "[socket:web]" in result.stdout + result.stderr


def test_interface_binds_to_the_device(circusd: Start, workers: list[int]) -> None:
    d = circusd(web("interface = lo"))
    answer = ask_tcp(d, "web", workers)
    assert answer["device"] == "lo"


def test_an_unknown_interface_stops_circusd_naming_the_socket(short_tmp: Path) -> None:
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[socket:web]\nhost = 127.0.0.1\nport = 0\n"
                   "interface = nosuchif0\n[watcher:w]\ncmd = sleep 3600\n")
    result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0  # 0.19 exited 0 (bug 17)
    assert "[socket:web]" in result.stdout + result.stderr


def test_a_port_in_use_stops_circusd_naming_the_socket(short_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ini = short_tmp / "c.ini"
        ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                       f"ipc://{short_tmp}/p\n[socket:Web]\nhost = 127.0.0.1\nport = {port}\n"
                       "[watcher:w]\ncmd = sleep 3600\n")
        result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True,
                                timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "[socket:web]" in output and f"127.0.0.1:{port}" in output  # names are lowered
    assert "in use" in output
    assert "Traceback" not in output


def test_so_reuseport_gives_each_worker_its_own_socket(circusd: Start,
                                                       workers: list[int]) -> None:
    d = circusd(web("so_reuseport = true"))
    sock = entry(d, "web")
    pids = wait_until(lambda: len(d.pids("w")) == 3 and d.pids("w"), what="3 workers")
    # circusd reserves the address without listening; each worker listens on its own
    wait_until(lambda: len(listening_ports(sock["port"])) == 3, what="3 listening sockets")
    answers = [ask_tcp(d, "web", workers) for _ in range(30)]
    assert {a["pid"] for a in answers} <= set(pids)
    assert all(a["reuseport"] for a in answers)
    inodes = {a["inode"] for a in answers}
    assert len(inodes) == len({a["pid"] for a in answers})  # one socket per worker
    assert fd_inode(d.pid, sock["fd"]) not in inodes
    assert not inodes & fd_inodes(d.pid)  # circusd kept none of the per-worker sockets


def test_so_reuseport_datagram_sockets_are_the_workers_own(circusd: Start,
                                                           workers: list[int]) -> None:
    d = circusd(
        "[socket:udp]\nhost = 127.0.0.1\nport = 0\ntype = SOCK_DGRAM\nso_reuseport = true\n"
        f"[watcher:w]\ncmd = {WORKER} --dgram --fd $(circus.sockets.udp)\nuse_sockets = true\n"
        "numprocesses = 2\n"
    )
    sock = entry(d, "udp")
    # circusd keeps no socket in the group (it would swallow its share of the datagrams)
    assert sock["fd"] == -1 and sock["port"] > 0
    pids = wait_until(lambda: len(d.pids("w")) == 2 and d.pids("w"), what="2 workers")
    answers = []
    for n in range(20):
        # a new source port each time, so the kernel's hash may pick either worker
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", 0))
            sender.settimeout(10)
            sender.sendto(b"ping %d" % n, ("127.0.0.1", sock["port"]))
            answers.append(json.loads(sender.recv(65536)))
    workers.extend(a["pid"] for a in answers)
    assert {a["pid"] for a in answers} <= set(pids)
    assert all(a["reuseport"] for a in answers)
    by_pid = {a["pid"]: a["inode"] for a in answers}
    assert len(set(by_pid.values())) == len(by_pid)  # one socket per worker


def test_socket_names_match_without_regard_to_case(circusd: Start, workers: list[int]) -> None:
    d = circusd(
        "[socket:WeB]\nhost = 127.0.0.1\nport = 0\n"
        f"[watcher:w]\ncmd = {WORKER} --fd $(CIRCUS.SOCKETS.web)\nuse_sockets = true\n"
    )
    sock = entry(d, "web")  # the name is lower-cased
    assert ask_tcp(d, "web", workers)["fd"] == sock["fd"]


def test_stdin_socket_is_fd_0(circusd: Start, workers: list[int]) -> None:
    d = circusd(
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n"
        f"[watcher:w]\ncmd = {WORKER} --fd 0\nstdin_socket = WEB\n"
    )
    answer = ask_tcp(d, "web", workers)
    sock = entry(d, "web")
    assert answer["fd"] == 0 and answer["inode"] == fd_inode(d.pid, sock["fd"])


def test_several_sockets_sorted_by_fd(circusd: Start, short_tmp: Path) -> None:
    d = circusd(
        "[socket:b]\nhost = 127.0.0.1\nport = 0\n"
        f"[socket:a]\npath = {short_tmp}/a.sock\n"
        "[socket:c]\nhost = 127.0.0.1\nport = 0\ntype = SOCK_DGRAM\n"
        "[watcher:w]\ncmd = sleep 3600\n"
    )
    socks = listsockets(d)
    assert sorted(s["name"] for s in socks) == ["a", "b", "c"]
    assert [s["fd"] for s in socks] == sorted(s["fd"] for s in socks)
    text = d.ctl("listsockets").stdout
    assert f"socket 'a' at {short_tmp}/a.sock" in text


# -- on_demand -------------------------------------------------------------------------------


def test_on_demand_starts_at_the_first_connection_and_waits_again(
    circusd: Start, workers: list[int]
) -> None:
    d = circusd(
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n"
        f"[watcher:w]\ncmd = {WORKER} --once --fd $(circus.sockets.web)\nuse_sockets = true\n"
        "on_demand = true\nrespawn = false\n"
    )
    status = d.call({"command": "status", "properties": {"name": "w"}})
    assert status["status"] == "stopped" and d.pids("w") == []
    # the connection that starts the watcher is the one the new worker accepts
    first = ask_tcp(d, "web", workers)
    # --once: the worker exits after it; with respawn = false the watcher stops and
    # waits for the next connection, which starts a new process
    wait_until(lambda: not pid_alive(first["pid"]), what="the first worker to exit")
    wait_until(lambda: d.call({"command": "status", "properties": {"name": "w"}})["status"]
               == "stopped", what="the watcher to stop")
    second = ask_tcp(d, "web", workers)
    assert second["pid"] != first["pid"]


def test_on_demand_works_whatever_the_start_order(circusd: Start, workers: list[int]) -> None:
    """0.19 bug 8: only the on_demand watcher that came first in start order started."""
    d = circusd(
        "[socket:one]\nhost = 127.0.0.1\nport = 0\n"
        "[socket:two]\nhost = 127.0.0.1\nport = 0\n"
        "[watcher:a]\nautostart = true\npriority = 10\ncmd = sleep 3600\n"
        f"[watcher:first]\ncmd = {WORKER} --fd $(circus.sockets.one)\nuse_sockets = true\n"
        "on_demand = true\npriority = 5\n"
        f"[watcher:second]\ncmd = {WORKER} --fd $(circus.sockets.two)\nuse_sockets = true\n"
        "on_demand = true\npriority = 1\n"
    )
    assert d.pids("first") == [] and d.pids("second") == []
    answer = ask_tcp(d, "two", workers)  # the later one in start order
    assert answer["pid"] in d.pids("second")
    assert d.pids("first") == []  # its socket saw nothing
    answer = ask_tcp(d, "one", workers)
    assert answer["pid"] in d.pids("first")


def test_a_stopped_on_demand_watcher_is_started_again_by_a_connection(
    circusd: Start, workers: list[int]
) -> None:
    d = circusd(web(watcher="on_demand = true"))
    workers.append(ask_tcp(d, "web", workers)["pid"])
    workers.extend(d.pids("w"))
    assert d.call({"command": "stop", "properties": {"name": "w", "waiting": True}}
                  )["status"] == "ok"
    assert d.pids("w") == []
    assert ask_tcp(d, "web", workers)["pid"] in d.pids("w")


# -- reloadconfig --------------------------------------------------------------------------


def test_reloadconfig_rebinds_a_changed_socket_and_restarts_its_users(
    circusd: Start, workers: list[int]
) -> None:
    d = circusd(web(cmd_tail="") + "[watcher:other]\ncmd = sleep 3600\n")
    old_fd = entry(d, "web")["fd"]
    old_pids = wait_until(lambda: len(d.pids("w")) == 3 and d.pids("w"), what="workers")
    workers.extend(old_pids)
    other = d.pids("other")
    text = d.ini.read_text().replace("[socket:web]\nhost = 127.0.0.1\nport = 0\n",
                                     "[socket:web]\nhost = 127.0.0.1\nport = 0\nbacklog = 9\n")
    text += "[socket:extra]\nhost = 127.0.0.1\nport = 0\n"
    d.ini.write_text(text)
    reply = d.call({"command": "reloadconfig", "properties": {"waiting": True}}, timeout=30)
    assert reply["status"] == "ok", reply
    new = entry(d, "web")
    assert new["backlog"] == 9 and entry(d, "extra")["port"] > 0
    assert isinstance(old_fd, int) and isinstance(new["fd"], int)
    answer = ask_tcp(d, "web", workers)
    assert answer["fd"] == new["fd"] and answer["pid"] not in old_pids
    assert d.pids("other") == other  # it does not use the socket: untouched
    # removing a section closes circusd's socket (processes that inherited it keep theirs)
    extra_inode = fd_inode(d.pid, entry(d, "extra")["fd"])
    d.ini.write_text(text.replace("[socket:extra]\nhost = 127.0.0.1\nport = 0\n", ""))
    reply = d.call({"command": "reloadconfig", "properties": {"waiting": True}}, timeout=30)
    assert reply["status"] == "ok", reply
    assert [s["name"] for s in listsockets(d)] == ["web"]
    assert extra_inode not in fd_inodes(d.pid)


def test_an_on_demand_watcher_waits_on_its_rebound_socket(circusd: Start,
                                                         workers: list[int]) -> None:
    d = circusd(web(watcher="on_demand = true"))
    d.ini.write_text(d.ini.read_text().replace("port = 0\n", "port = 0\nbacklog = 5\n"))
    assert call_ok(d, "reloadconfig")
    new = entry(d, "web")
    assert new["backlog"] == 5 and d.pids("w") == []
    assert ask_tcp(d, "web", workers)["fd"] == new["fd"]


def call_ok(d: Daemon, command: str) -> bool:
    reply = d.call({"command": command, "properties": {"waiting": True}}, timeout=30)
    assert reply["status"] == "ok", reply
    return True


def test_reloadconfig_refuses_a_socket_it_cannot_bind(circusd: Start) -> None:
    d = circusd(web())
    before = listsockets(d)
    pids = d.pids("w")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d.ini.write_text(d.ini.read_text() + f"[socket:new]\nhost = 127.0.0.1\nport = {port}\n")
        reply = d.call({"command": "reloadconfig", "properties": {"waiting": True}})
    assert reply["status"] == "error" and "[socket:new]" in reply["reason"]
    assert listsockets(d) == before and d.pids("w") == pids


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
