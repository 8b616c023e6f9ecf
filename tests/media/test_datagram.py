"""The sockets the media clock reads per tick: both implementations (C and portable) behave alike.

Real UDP sockets on loopback; a peer socket sends, the poller reads.
"""

import socket
import time

import pytest

from parley.media import datagram, datagram_c
from parley.media.endpoint import PortAllocator

IMPLEMENTATIONS = [pytest.param(datagram_c, id="c"), pytest.param(datagram, id="portable")]


def bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def peer():
    sock = bound()
    sock.settimeout(1.0)
    yield sock
    sock.close()


def poll_until(poller, received: list, count: int) -> None:
    """Poll (as the media clock would, a tick at a time) until ``count`` datagrams were handled."""
    for _ in range(100):
        poller.poll()
        if len(received) >= count:
            return
        time.sleep(0.002)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_datagram_reaches_the_handler_with_source_and_kernel_arrival_time(impl, peer):
    poller = impl.DatagramPoller()
    sock = impl.DatagramSocket(bound())
    poller.add(sock)
    received = []
    sock.handler = lambda data, source, arrival: received.append((data, source, arrival))
    target = sock.sock.getsockname()
    # Linux turns receive timestamps on a moment after the first socket asks (a deferred switch);
    # until then it stamps a datagram when it is read. Let the switch happen before sending.
    time.sleep(0.05)
    sent_at = time.monotonic()
    for i in range(40):  # more than one batch: the rest is read on the next polls
        peer.sendto(b"packet %d" % i, target)
    time.sleep(0.05)
    polled_at = time.monotonic()
    poll_until(poller, received, 40)
    assert [data for data, _, _ in received] == [b"packet %d" % i for i in range(40)]
    assert {source for _, source, _ in received} == {peer.getsockname()}
    assert polled_at - sent_at >= 0.05
    # when the kernel got it (about sent_at), not when the poll read it (after polled_at)
    for _, _, arrival in received:
        assert sent_at - 0.001 <= arrival <= sent_at + 0.02
    assert sock.received == 40
    poller.remove(sock)
    sock.close()
    poller.close()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sendto_reaches_the_peer_and_follows_a_new_destination(impl, peer):
    sock = impl.DatagramSocket(bound())
    other = bound()
    other.settimeout(1.0)
    try:
        destination = peer.getsockname()
        sock.sendto(b"one", destination)
        sock.sendto(b"two", destination)
        sock.sendto(b"three", other.getsockname())
        assert peer.recvfrom(100) == (b"one", sock.sock.getsockname())
        assert peer.recvfrom(100)[0] == b"two"
        assert other.recvfrom(100)[0] == b"three"
        assert sock.sent == 3 and sock.send_errors == 0
    finally:
        sock.close()
        other.close()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_bad_destination_is_a_clear_error_and_a_closed_socket_sends_nothing(impl, peer):
    sock = impl.DatagramSocket(bound())
    with pytest.raises((ValueError, OSError)):
        sock.sendto(b"x", ("not-an-address", 4000))
    sock.close()
    sock.sendto(b"x", peer.getsockname())  # after close: dropped, no exception
    peer.settimeout(0.05)
    with pytest.raises(TimeoutError):
        peer.recvfrom(100)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_handler_that_closes_its_socket_stops_its_reads_and_spares_the_others(impl, peer):
    poller = impl.DatagramPoller()
    first, second = impl.DatagramSocket(bound()), impl.DatagramSocket(bound())
    for sock in (first, second):
        poller.add(sock)
    got_first, got_second = [], []

    def hang_up(data, source, arrival):
        got_first.append(data)
        poller.remove(first)
        first.close()

    first.handler = hang_up
    second.handler = lambda data, source, arrival: got_second.append(data)
    for i in range(3):
        peer.sendto(b"a%d" % i, first.sock.getsockname())
        peer.sendto(b"b%d" % i, second.sock.getsockname())
    time.sleep(0.02)
    poll_until(poller, got_second, 3)
    assert got_first == [b"a0"]
    assert got_second == [b"b0", b"b1", b"b2"]
    assert len(poller) == 1
    poller.remove(second)
    second.close()
    poller.close()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_datagrams_without_a_handler_are_read_and_dropped(impl, peer):
    poller = impl.DatagramPoller()
    sock = impl.DatagramSocket(bound())
    poller.add(sock)
    peer.sendto(b"early", sock.sock.getsockname())
    time.sleep(0.02)
    assert poller.poll() == 1
    assert sock.received == 1
    assert poller.poll() == 0
    poller.remove(sock)
    sock.close()
    poller.close()


async def test_port_allocator_skips_ports_in_use_and_registers_the_pair():
    poller = datagram_c.DatagramPoller()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    free.bind(("127.0.0.1", 0))
    first = free.getsockname()[1] & ~1
    free.close()
    taken.bind(("127.0.0.1", first + 1))  # the RTCP port of the first pair is busy
    try:
        ports = PortAllocator("127.0.0.1", first, first + 6, poller=poller)
        endpoint = await ports.open()
        assert endpoint.port == first + 2
        assert len(poller) == 2
        endpoint.close()
        assert len(poller) == 0
    finally:
        taken.close()
        poller.close()


async def test_port_allocator_cycles_through_its_range_and_wraps_around():
    poller = datagram_c.DatagramPoller()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    first = probe.getsockname()[1] & ~1
    probe.close()
    try:
        ports = PortAllocator("127.0.0.1", first, first + 6, poller=poller)
        handed = []
        for _ in range(5):
            endpoint = await ports.open()
            handed.append(endpoint.port - first)
            endpoint.close()
        assert handed == [0, 2, 4, 0, 2]
    finally:
        poller.close()


def test_the_media_clock_reads_sockets_with_the_c_implementation():
    from parley.media.clock import MediaClock

    assert type(MediaClock().poller) is datagram_c.DatagramPoller


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_ipv6_sources_arrive_as_host_and_port(impl):
    try:
        first, second = (socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2))
        first.bind(("::1", 0))
        second.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    poller = impl.DatagramPoller()
    sender, receiver = impl.DatagramSocket(first), impl.DatagramSocket(second)
    poller.add(receiver)
    received = []
    receiver.handler = lambda data, source, arrival: received.append((data, source))
    sender.sendto(b"over v6", ("::1", second.getsockname()[1]))
    poll_until(poller, received, 1)
    assert received == [(b"over v6", ("::1", first.getsockname()[1]))]
    poller.remove(receiver)
    for sock in (sender, receiver):
        sock.close()
    poller.close()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_shared_socket_routes_each_source_to_its_handler_and_drops_the_rest(impl):
    shared = impl.SharedSocket(bound())
    peers = [bound() for _ in range(3)]
    try:
        got: dict[int, list] = {0: [], 1: []}
        sources = [peer.getsockname() for peer in peers]
        for k in (0, 1):
            shared.route(sources[k], lambda data, source, arrival, k=k: got[k].append((data, source)))
        assert shared.routed(sources[0]) is not None and shared.routed(sources[2]) is None
        target = shared.sock.getsockname()
        for i in range(150):  # more than a recvmmsg batch
            peers[i % 3].sendto(b"%d" % i, target)
        time.sleep(0.05)
        offset = time.time() - time.monotonic()
        read = 0
        for _ in range(50):
            read += shared.drain(offset)
            if read >= 150:
                break
            time.sleep(0.002)
        for k in (0, 1):
            assert [data for data, _ in got[k]] == [b"%d" % i for i in range(k, 150, 3)]
            assert all(source == sources[k] for _, source in got[k])
        assert (shared.received, shared.unrouted) == (150, 50)  # the third peer has no route
        shared.route(sources[1], None)
        peers[1].sendto(b"late", target)
        time.sleep(0.02)
        shared.drain(offset)
        assert len(got[1]) == 50 and shared.unrouted == 51
    finally:
        shared.close()
        for peer in peers:
            peer.close()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_shared_senders_queue_until_a_flush_and_reach_each_destination(impl):
    shared = impl.SharedSocket(bound())
    peers = [bound() for _ in range(2)]
    for peer in peers:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # 300 small datagrams each
    try:
        senders = [impl.SharedSender(shared) for _ in peers]
        for i in range(600):  # more than the queue holds: it flushes itself on the way
            senders[i % 2].sendto(b"%d" % i, peers[i % 2].getsockname())
        senders[0].sendto(b"x" * 1000, peers[0].getsockname())  # too long to queue: sent at once
        shared.flush()
        assert shared.sent == 601 and shared.send_errors == 0
        for k, peer in enumerate(peers):
            peer.settimeout(1.0)
            got = [peer.recvfrom(2048) for _ in range(300)]
            assert [data for data, _ in got] == [b"%d" % i for i in range(k, 600, 2)]
            assert {source for _, source in got} == {shared.sock.getsockname()}
        assert peers[0].recvfrom(2048)[0] == b"x" * 1000
        with pytest.raises(ValueError):
            senders[0].sendto(b"x", ("::1", 4000))  # IPv4 only
        with pytest.raises(ValueError):
            shared.route(("not-an-address", 4000), print)
    finally:
        shared.close()
        for peer in peers:
            peer.close()
