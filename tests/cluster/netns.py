"""Hosts on one machine: Linux network namespaces on a bridge, made and removed by the tests.

A ``Bridge`` is a Linux bridge in the host's namespace with the address ``10.77.N.1/24`` (``N``
picked free for this session, under a lock, so sessions side by side do not clash). Each
``Host`` is a network namespace joined to it by a veth pair, with an address of its own
(``10.77.N.10`` and up); a program runs in it through ``ip netns exec``. ``partition`` takes the
host's link down at the bridge (packets to and from it are dropped, silently: neighbours are
fixed both ways, so its connections hang, as when a switch dies); ``heal`` brings it back.

Names carry a random session id (``js<id>…``), so two sessions never touch each other's.
Needs root (or CAP_NET_ADMIN) and ``ip``; ``unavailable()`` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

LOCK = Path("/tmp/jobsys-netns.lock")
"""Held while a session picks its subnet and makes its bridge."""
PREFIX = "10.77"


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message has its command line and stderr."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; raise ``NetnsError`` (with ``ip``'s stderr) if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why this machine cannot make network namespaces and bridges, or None if it can (tried
    for real: a namespace, a bridge and a veth pair are made and removed)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_NET_ADMIN)"
    probe = f"jsp{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
        ip("link", "add", f"{probe}b", "type", "bridge")
        ip("link", "add", f"{probe}v", "type", "veth", "peer", "name", f"{probe}w")
        ip("link", "set", f"{probe}w", "netns", probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace, bridge and veth pair here: {exc}"
    finally:
        ip("link", "del", f"{probe}v", check=False)
        ip("link", "del", f"{probe}b", check=False)
        ip("netns", "del", probe, check=False)
    return None


def mac(link: str, namespace: str | None = None) -> str:
    """The MAC address of ``link`` (in ``namespace``, if given)."""
    where = ("-n", namespace) if namespace else ()
    return str(json.loads(ip(*where, "-j", "link", "show", "dev", link))[0]["address"])


def fix_neighbour(address: str, lladdr: str, dev: str, namespace: str | None = None) -> None:
    """A permanent neighbour entry: ``address`` is at ``lladdr`` on ``dev``."""
    where = ("-n", namespace) if namespace else ()
    ip(*where, "neigh", "replace", address, "lladdr", lladdr, "dev", dev, "nud", "permanent")


def _subnets_in_use() -> set[int]:
    used = set()
    for line in ip("-o", "-4", "addr", "show").splitlines():
        for word in line.split():
            if word.startswith(f"{PREFIX}."):
                used.add(int(ipaddress.ip_interface(word).ip.packed[2]))
    return used


class Bridge:
    """A bridge ``jsb<session>`` with ``10.77.N.1/24``; ``host(name)`` adds a namespace to it."""

    def __init__(self) -> None:
        self.session = uuid.uuid4().hex[:6]
        self.name = f"jsb{self.session}"
        self.hosts: dict[str, Host] = {}
        self._next = 10
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            free = sorted(set(range(1, 255)) - _subnets_in_use())
            if not free:
                raise NetnsError(f"no free {PREFIX}.N.0/24 subnet for a bridge")
            self.subnet = free[0]
            self.address = f"{PREFIX}.{self.subnet}.1"
            ip("link", "add", self.name, "type", "bridge", "forward_delay", "0")
            try:
                # Its address pinned: a bridge otherwise takes the lowest address of its ports,
                # so plugging in a host could change it under the fixed neighbour entries of
                # the hosts plugged in before, which would lose the bridge (and every service
                # behind it) for good.
                ip("link", "set", self.name, "address", mac(self.name))
                ip("addr", "add", f"{self.address}/24", "dev", self.name)
                ip("link", "set", self.name, "up")
            except NetnsError:
                ip("link", "del", self.name, check=False)
                raise

    def host(self, name: str) -> Host:
        """A new namespace ``name`` (unique in this bridge) on the bridge, link up."""
        assert name not in self.hosts, name
        host = Host(self, name, f"{PREFIX}.{self.subnet}.{self._next}", self._next)
        self._next += 1
        self.hosts[name] = host
        return host

    def remove(self, name: str) -> None:
        self.hosts.pop(name).remove()

    def close(self) -> None:
        """Remove every namespace, then the bridge; goes on past errors (teardown)."""
        for name in list(self.hosts):
            with contextlib.suppress(NetnsError):
                self.remove(name)
        ip("link", "del", self.name, check=False)


class Host:
    """A network namespace ``js<session>-<name>`` whose ``eth0`` has ``address``, plugged into
    the bridge through the veth ``jsv<session><n>`` (the end ``partition`` takes down)."""

    def __init__(self, bridge: Bridge, name: str, address: str, number: int) -> None:
        self.name = name
        self.address = address
        self.netns = f"js{bridge.session}-{name}"
        self.link = f"jsv{bridge.session}{number}"
        self.bridge = bridge.name
        peer = f"jsw{bridge.session}{number}"
        ip("netns", "add", self.netns)
        try:
            ip("link", "add", self.link, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", self.netns)
            ip("link", "set", self.link, "master", bridge.name)
            ip("link", "set", self.link, "up")
            inside = ("netns", "exec", self.netns, "ip")
            ip(*inside, "link", "set", peer, "name", "eth0")
            ip(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
            ip(*inside, "link", "set", "lo", "up")
            # Fixed neighbours both ways: a partition drops packets silently (connections
            # hang, as when a switch dies), rather than failing fast once ARP gives up.
            fix_neighbour(bridge.address, mac(bridge.name), "eth0", self.netns)
            fix_neighbour(address, mac("eth0", self.netns), bridge.name)
        except NetnsError:
            self.remove()
            raise
        self.partitioned = False

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *command]

    def partition(self) -> None:
        """Cut the host off: its link to the bridge goes down (nothing in the namespace
        changes; its packets are dropped, its connections hang)."""
        ip("link", "set", self.link, "down")
        self.partitioned = True

    def heal(self) -> None:
        ip("link", "set", self.link, "up")
        self.partitioned = False

    def remove(self) -> None:
        """Delete the namespace (the veth pair goes with it)."""
        ip("link", "del", self.link, check=False)
        ip("netns", "del", self.netns, check=False)
        ip("neigh", "del", self.address, "dev", self.bridge, check=False)
