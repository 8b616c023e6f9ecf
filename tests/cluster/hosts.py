"""Three hosts on one machine for the cluster tests: Kamailio on one, a Parley node on each of two others.

- **Network namespaces** (needs root and iproute2): one namespace per host, each joined by a veth
  pair to a bridge in a fourth namespace (the "switch"); the root namespace has a port on the
  switch too, and the load tester calls from there. Hosts talk over the bridge, so the root
  namespace forwards nothing (its sysctls and firewall are left alone), and taking a host's switch
  port down is its cable pulled out.
- **Loopback addresses** where namespaces cannot be made: Kamailio and the caller on 127.0.0.1,
  the nodes on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to ``lo``). No link can go down.

``PARLEY_TEST_HOSTS=loopback`` chooses the loopback stand-ins even where namespaces work.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from integration.harness import free_port


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


@dataclass
class Host:
    """One host: its address, what runs a command on it, the SIP port its service takes."""

    address: str
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NAME]
    sip_port: int | None = None  # None: any free port (loopback hosts share the port space)
    namespace: str | None = None
    switch_port: str | None = None  # its cable: the switch's end of its veth pair


class Hosts:
    """Where the proxy, the two nodes and the caller run (``kind`` says which topology)."""

    kind = "loopback addresses"

    def __init__(self) -> None:
        self.proxy = Host("127.0.0.1", sip_port=free_port())
        self.nodes = [Host("127.0.0.2"), Host("127.0.0.3")]
        self.caller = "127.0.0.1"  # the load tester's address (root namespace)

    def unplug(self, host: Host) -> None:
        raise NotImplementedError("a loopback address has no link to take down")

    def plug(self, host: Host) -> None:
        raise NotImplementedError("a loopback address has no link to take down")

    def remove(self) -> None:
        """Nothing to undo."""


class NamespaceHosts(Hosts):
    """Three namespaces on a bridge (in a fourth) that the root namespace also has a port on."""

    kind = "network namespaces"
    SIP_PORT = 5060  # a host of its own: nothing else holds its ports

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        net = f"10.{random.randrange(200, 250)}.{random.randrange(1, 255)}"
        self.switch = f"parley-{tag}-sw"
        self.root_link = f"pv{tag}"  # interface names: 15 characters at most
        self.namespaces: list[str] = []
        self.caller = f"{net}.1"
        try:
            self._namespace(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
            ip("link", "add", self.root_link, "type", "veth", "peer", "name", "root", "netns", self.switch)
            self._join("root")
            ip("addr", "add", f"{self.caller}/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
            self.proxy, *self.nodes = (self._host(f"parley-{tag}-{name}", f"{net}.{i + 2}")
                                       for i, name in enumerate("kab"))  # fmt: skip
        except BaseException:
            self.remove()
            raise

    def _namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _join(self, port: str) -> None:
        """Put the switch's end ``port`` of a veth pair on the bridge and up."""
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")

    def _host(self, namespace: str, address: str) -> Host:
        self._namespace(namespace)
        port = "p" + namespace.rsplit("-", 1)[1]
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        self._join(port)
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        prefix = ["ip", "netns", "exec", namespace]
        return Host(address, prefix, self.SIP_PORT, namespace, port)

    def unplug(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", str(host.switch_port), "down")

    def plug(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", str(host.switch_port), "up")

    def remove(self) -> None:
        """Kill what still runs in the namespaces (all started by the test), then delete them; the
        veth pairs go with them."""
        for namespace in self.namespaces:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                for pid in ip("netns", "pids", namespace).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                ip("netns", "delete", namespace)
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            ip("link", "delete", self.root_link)  # gone with the switch already, unless it failed


def make_hosts() -> tuple[Hosts, str]:
    """Namespaces where they can be made, else the loopback stand-ins, and why."""
    if os.environ.get("PARLEY_TEST_HOSTS") == "loopback":
        return Hosts(), "PARLEY_TEST_HOSTS=loopback"
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return Hosts(), "network namespaces need root and iproute2"
    try:
        return NamespaceHosts(), "root: network namespaces"
    except subprocess.CalledProcessError as exc:
        return Hosts(), f"cannot make network namespaces here: {exc.stderr.strip()}"
