"""``parley cluster kamailio-config``: Kamailio 5.6 (Debian's ``kamailio``) in front of Parley nodes.

Kamailio carries the signalling only; RTP flows straight between the caller and the worker whose
address is in the SDP (behind NAT, rtpengine would sit beside Kamailio: see docs/scaling.md).

- **Destinations**: one dispatcher entry per worker (``HOST:PORT`` to ``HOST:PORT+N-1`` for a node
  of N workers, as ``parley serve --workers N`` listens), each with a ``duid`` and ``maxload``.
- **Algorithm 10, call load**: a new call goes to the worker with the fewest calls in progress
  (Kamailio counts them by Call-ID between the INVITE and the BYE), up to ``maxload`` each. Chosen
  over weights (9, 11) because a call holds its worker for minutes and a worker's capacity is a
  number of concurrent calls: a worker just restarted by a roll, or one whose calls were long,
  gets the next calls until it is level, where a weight would keep handing it its fixed share.
- **Health**: every worker is probed with OPTIONS every ``probe_interval`` seconds; one failed
  probe (a draining worker's 503, or no answer) takes it out, one 200 puts it back.
- **Failover**: an INVITE answered 503 (busy, draining) or not answered at all (a dead worker; the
  latter also marks it down at once) is sent to the next destination; the caller sees a failure
  only when none is left.
- **Record-Route** on INVITEs, so ACK, BYE and re-INVITE follow the dialog through the proxy
  (Parley copies Record-Route into its 2xx); BYE and CANCEL release the call's load.
- **Per-source rate** (``rate_per_ip``, off by default): the ``pike`` module drops the requests
  of a source sending more than that many a second (the workers themselves exempt). Behind
  Kamailio a worker sees every request come from Kamailio's address, so this is where callers'
  rates are limited; leave it off when the calls come through a carrier's SBC, one address for all.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

_NODE = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d+))?(?:/(?P<workers>\d+))?$")


@dataclass(frozen=True, slots=True)
class Node:
    """A ``parley serve`` node: ``workers`` workers on SIP ports ``port`` .. ``port + workers - 1``."""

    host: str
    port: int = 5060
    workers: int = 1

    @classmethod
    def parse(cls, text: str) -> Node:
        """``HOST[:PORT][/WORKERS]``, e.g. ``10.0.0.5:5060/8``."""
        match = _NODE.match(text.strip())
        if match is None:
            raise ValueError(f"{text!r}: expected HOST[:PORT][/WORKERS], e.g. 10.0.0.5:5060/8")
        port = int(match["port"] or 5060)
        workers = int(match["workers"] or 1)
        if workers < 1 or not 0 < port <= 65536 - workers:
            raise ValueError(f"{text!r}: workers must be at least 1 and ports {port}.. valid ports")
        return cls(match["host"], port, workers)

    def destinations(self) -> list[str]:
        return [f"{self.host}:{self.port + i}" for i in range(self.workers)]


def module_path() -> str | None:
    """Where Debian installs Kamailio's modules (None: leave it to Kamailio's built-in default)."""
    for candidate in [*sorted(glob.glob("/usr/lib/*/kamailio/modules")), "/usr/lib/kamailio/modules"]:
        if os.path.exists(os.path.join(candidate, "dispatcher.so")):
            return candidate + "/"
    return None


def dispatcher_list(nodes: list[Node], max_load: int = 0) -> str:
    """``dispatcher.list``: set 1, one line per worker (flags 0, priority 0, call-load attributes)."""
    lines = ["# set destination flags priority attributes (written by parley cluster kamailio-config)"]
    for node in nodes:
        for destination in node.destinations():
            lines.append(f"1 sip:{destination} 0 0 duid={destination};maxload={max_load}")
    return "\n".join(lines) + "\n"


def kamailio_cfg(
    *,
    listen: str,
    dispatcher_file: str,
    probe_interval: int = 1,
    children: int = 4,
    modules: str | None = None,
    timeout_ms: int = 2000,
    rate_per_ip: int = 0,
) -> str:
    """``kamailio.cfg`` for Kamailio 5.6, listening on ``listen`` (``IP:PORT``, UDP); ``rate_per_ip``
    requests a second from one source at most (0: no limit)."""
    if probe_interval < 1:
        raise ValueError("the probe interval is whole seconds, at least 1")
    if rate_per_ip < 0:
        raise ValueError("the rate per source is a number of requests a second, 0 for no limit")
    mpath = f'mpath="{modules}"\n' if modules else ""
    pike = _PIKE.replace("@DENSITY@", str(rate_per_ip * _PIKE_UNIT_S)) if rate_per_ip else ""
    pike_check = _PIKE_CHECK if rate_per_ip else ""
    return (
        _TEMPLATE.replace("@LISTEN@", listen)
        .replace("@PIKE@", pike)
        .replace("@PIKE_CHECK@", pike_check)
        .replace("@MPATH@", mpath)
        .replace("@CHILDREN@", str(children))
        .replace("@DISPATCHER_LIST@", dispatcher_file)
        .replace("@PROBE_INTERVAL@", str(probe_interval))
        .replace("@TIMEOUT_MS@", str(timeout_ms))
    )


_PIKE_UNIT_S = 2
_PIKE = f"""loadmodule "pike.so"
# A source sending more than @DENSITY@ requests in {_PIKE_UNIT_S} s is blocked until it slows down.
modparam("pike", "sampling_time_unit", {_PIKE_UNIT_S})
modparam("pike", "reqs_density_per_unit", @DENSITY@)
modparam("pike", "remove_latency", 4)
"""
_PIKE_CHECK = """    if (!ds_is_from_list("1") && !pike_check_req()) { exit; }  # a flooding source: drop
"""

_TEMPLATE = """#!KAMAILIO
# Written by `parley cluster kamailio-config`: a stateful SIP load balancer in front of Parley
# workers (dispatcher set 1 in the dispatcher list). Signalling only: RTP flows straight between
# callers and workers. Algorithm 10 (call load), OPTIONS probes, failover on 503 or timeout,
# Record-Route. Check it with `kamailio -c -f kamailio.cfg`.
debug=1
log_stderror=no
log_facility=LOG_LOCAL0
fork=yes
children=@CHILDREN@
disable_tcp=yes
auto_aliases=no
listen=udp:@LISTEN@
@MPATH@
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
@PIKE@
# No provisional answer within this long: the worker is taken for dead (408, failover). Parley
# answers 100 Trying at once; it is also how long an OPTIONS probe waits.
modparam("tm", "fr_timer", @TIMEOUT_MS@)
modparam("tm", "fr_inv_timer", 60000)
modparam("rr", "enable_full_lr", 1)

modparam("dispatcher", "list_file", "@DISPATCHER_LIST@")
modparam("dispatcher", "flags", 2)  # failover: ds_next_dst() tries the rest of the set
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:dispatcher@parley.invalid")
modparam("dispatcher", "ds_ping_interval", @PROBE_INTERVAL@)
modparam("dispatcher", "ds_probing_mode", 1)  # probe every worker, always
modparam("dispatcher", "ds_probing_threshold", 1)  # one failed probe (503 draining, timeout): out
modparam("dispatcher", "ds_inactive_threshold", 1)  # one 200: back in
modparam("dispatcher", "ds_hash_size", 9)  # call-load table (algorithm 10): 512 slots
modparam("dispatcher", "ds_hash_expire", 14400)  # a call's load is dropped after 4 h without BYE
modparam("dispatcher", "ds_hash_initexpire", 60)  # ... or 60 s without a 2xx

request_route {
@PIKE_CHECK@    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) {
            if (is_method("BYE")) { ds_load_update(); }  # the call ends: release its worker's load
            t_relay();
            exit;
        }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) { ds_load_update(); t_relay(); }
        exit;
    }
    t_check_trans();
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {
        sl_send_reply("200", "OK");  # the balancer itself is up
        exit;
    }
    if (is_method("INVITE")) {
        record_route();
        if (!ds_select_dst("1", "10")) { sl_send_reply("503", "No worker available"); exit; }
        t_on_reply("DISPATCHED");
        t_on_failure("FAILOVER");
    } else if (!ds_select_dst("1", "4")) {
        sl_send_reply("503", "No worker available");
        exit;
    }
    if (!t_relay()) { sl_reply_error(); }
    exit;
}

onreply_route[DISPATCHED] {
    if (is_method("INVITE") && status =~ "2[0-9][0-9]") { ds_load_update(); }
}

failure_route[FAILOVER] {
    if (t_is_canceled()) { exit; }
    if (t_branch_timeout() && !t_branch_replied()) { ds_mark_dst("ip"); }  # dead: out until a probe
    if (t_check_status("503") || (t_branch_timeout() && !t_branch_replied())) {
        if (ds_next_dst()) {
            t_on_reply("DISPATCHED");
            t_on_failure("FAILOVER");
            t_relay();
            exit;
        }
    }
    ds_load_unset();
}
"""
