# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The C implementation of :mod:`parley.media.datagram` (same classes, same behaviour).

Hand-written because Python has no batched datagram I/O (the ``socket`` module has no
``recvmmsg``) and no library offers it: one ``epoll_wait(0)`` per tick finds the readable
sockets, one ``recvmmsg(2)`` reads all of a socket's datagrams with their kernel arrival times,
and the source's ``(host, port)`` tuple is built only when it differs from the previous
packet's. ``sendto`` keeps the destination's ``sockaddr`` from the last call, so sending a
packet costs one system call and no address parsing. :class:`SharedSocket` serves many peers on
one socket (a load tester's calls): 64 datagrams per ``recvmmsg(2)``, routed by source address,
and queued sends leaving 64 per ``sendmmsg(2)``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from posix.uio cimport iovec
from posix.unistd cimport close as close_fd


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t addr_len)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    enum:
        AF_INET
        AF_INET6
        MSG_DONTWAIT
        MSG_TRUNC
        SOL_SOCKET
        SO_TIMESTAMPNS
        SCM_TIMESTAMPNS

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr

    unsigned short ntohs(unsigned short value)
    unsigned short htons(unsigned short value)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int family, const void *src, char *dst, socklen_t size)
    int inet_pton(int family, const char *src, void *dst)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLLIN
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

cdef enum:
    BATCH = 16  # datagrams read from one socket per poll (as in parley.media.datagram)
    BUFFER = 2048  # bytes per datagram; longer ones are dropped as truncated
    CONTROL = 64  # ancillary bytes per datagram: one SCM_TIMESTAMPNS
    EVENTS = 256  # readable sockets taken per epoll_wait


cdef double _seconds(timespec *value) noexcept nogil:
    return <double>value.tv_sec + <double>value.tv_nsec * 1e-9


cdef double _now(int clock) noexcept nogil:
    cdef timespec value
    clock_gettime(clock, &value)
    return _seconds(&value)


cdef class DatagramSocket:
    """A bound, non-blocking UDP socket: ``handler`` gets what arrives, :meth:`sendto` sends."""

    cdef readonly object sock
    cdef readonly int fd
    cdef public object handler
    cdef public long long received, sent, send_errors
    cdef sockaddr_storage _source
    cdef socklen_t _source_length
    cdef object _source_tuple
    cdef sockaddr_storage _destination
    cdef socklen_t _destination_length
    cdef object _destination_tuple

    def __init__(self, sock):
        cdef int on = 1
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        setsockopt(self.fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on))
        self.handler = None
        self._source_length = 0
        self._destination_length = 0

    cpdef sendto(self, bytes data, object addr):
        """Send one datagram; a full buffer or an ICMP error drops it (counted), like UDP does."""
        if self.fd < 0:
            return
        if addr is not self._destination_tuple:  # the same tuple object as last time: nothing to compare
            if addr != self._destination_tuple:
                self._set_destination(addr)
            elif type(addr) is tuple:
                self._destination_tuple = addr  # an equal tuple: compare by identity from now on
        if sendto(self.fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), 0,
                  <sockaddr *>&self._destination, self._destination_length) < 0:
            self.send_errors += 1
        else:
            self.sent += 1

    cdef _set_destination(self, object addr):
        cdef sockaddr_in *v4 = <sockaddr_in *>&self._destination
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&self._destination
        host, port = addr[0], addr[1]
        encoded = host.encode("ascii") if isinstance(host, str) else bytes(host)
        memset(&self._destination, 0, sizeof(self._destination))
        if inet_pton(AF_INET, encoded, &v4.sin_addr) == 1:
            v4.sin_family = AF_INET
            v4.sin_port = htons(port)
            self._destination_length = sizeof(sockaddr_in)
        elif inet_pton(AF_INET6, encoded, &v6.sin6_addr) == 1:
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(port)
            self._destination_length = sizeof(sockaddr_in6)
        else:
            raise ValueError(f"not a numeric IP address: {host!r}")
        self._destination_tuple = (host, port)

    cdef object _source_of(self, sockaddr_storage *source, socklen_t length):
        """The ``(host, port)`` of a datagram's source: the previous packet's tuple when it is the same."""
        cdef char text[64]
        cdef sockaddr_in *v4
        cdef sockaddr_in6 *v6
        if length == self._source_length and memcmp(source, &self._source, length) == 0:
            return self._source_tuple
        if source.ss_family == AF_INET:
            v4 = <sockaddr_in *>source
            inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
            result = (text.decode("ascii"), ntohs(v4.sin_port))
        elif source.ss_family == AF_INET6:
            v6 = <sockaddr_in6 *>source
            inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
            result = (text.decode("ascii"), ntohs(v6.sin6_port))
        else:
            return None
        memcpy(&self._source, source, length)
        self._source_length = length
        self._source_tuple = result
        return result

    def drain(self, double clock_offset):
        """Read up to 16 waiting datagrams and hand them on; returns how many."""
        return _drain(self, clock_offset)

    def close(self):
        self.handler = None
        self.fd = -1
        self.sock.close()


# One set of receive buffers for the process: the media clock polls from one thread.
cdef mmsghdr _messages[BATCH]
cdef iovec _vectors[BATCH]
cdef sockaddr_storage _names[BATCH]
cdef char _buffers[BATCH][BUFFER]
cdef char _controls[BATCH][CONTROL]


cdef double _arrival(msghdr *header, double fallback, double clock_offset) noexcept nogil:
    """The datagram's kernel receive time (SO_TIMESTAMPNS) on the monotonic clock, else ``fallback``."""
    cdef cmsghdr *control = CMSG_FIRSTHDR(header)
    while control != NULL:
        if control.cmsg_level == SOL_SOCKET and control.cmsg_type == SCM_TIMESTAMPNS:
            return _seconds(<timespec *>CMSG_DATA(control)) - clock_offset
        control = CMSG_NXTHDR(header, control)
    return fallback


cdef int _drain(DatagramSocket sock, double clock_offset) except -1:
    cdef int i, count
    cdef double arrival, fallback
    cdef msghdr *header
    if sock.fd < 0:
        return 0
    for i in range(BATCH):
        _vectors[i].iov_base = _buffers[i]
        _vectors[i].iov_len = BUFFER
        header = &_messages[i].msg_hdr
        header.msg_name = &_names[i]
        header.msg_namelen = sizeof(sockaddr_storage)
        header.msg_iov = &_vectors[i]
        header.msg_iovlen = 1
        header.msg_control = _controls[i]
        header.msg_controllen = CONTROL
        header.msg_flags = 0
    count = recvmmsg(sock.fd, _messages, BATCH, MSG_DONTWAIT, NULL)
    if count <= 0:
        return 0  # nothing waiting, or an ICMP error from an earlier send (read and gone)
    fallback = _now(CLOCK_MONOTONIC)
    for i in range(count):
        header = &_messages[i].msg_hdr
        if header.msg_flags & MSG_TRUNC:
            continue
        arrival = _arrival(header, fallback, clock_offset)
        sock.received += 1
        handler = sock.handler
        if handler is None:
            continue
        source = sock._source_of(&_names[i], header.msg_namelen)
        if source is not None:
            handler(PyBytes_FromStringAndSize(_buffers[i], _messages[i].msg_len), source, arrival)
        if sock.fd < 0:  # the handler closed the socket (the call ended)
            break
    return count


cdef class DatagramPoller:
    """The sockets the media clock reads at each tick."""

    cdef int _epoll
    cdef dict _sockets
    cdef epoll_event _events[EVENTS]

    def __init__(self):
        self._epoll = epoll_create1(EPOLL_CLOEXEC)
        if self._epoll < 0:
            raise OSError(errno, "epoll_create1 failed")
        self._sockets = {}

    def __len__(self):
        return len(self._sockets)

    def add(self, DatagramSocket sock):
        cdef epoll_event event
        event.events = EPOLLIN
        event.data.u64 = 0
        event.data.fd = sock.fd
        if epoll_ctl(self._epoll, EPOLL_CTL_ADD, sock.fd, &event) < 0:
            raise OSError(errno, f"cannot watch socket {sock.fd}")
        self._sockets[sock.fd] = sock

    def remove(self, DatagramSocket sock):
        """Forget a socket (call before closing it); unknown sockets are ignored."""
        if self._sockets.get(sock.fd) is sock:
            del self._sockets[sock.fd]
            epoll_ctl(self._epoll, EPOLL_CTL_DEL, sock.fd, NULL)

    cpdef int poll(self) except -1:
        """Hand every waiting datagram to its socket's handler; returns how many were read."""
        cdef int ready, i, total = 0, rounds
        cdef double offset
        cdef DatagramSocket sock
        if not self._sockets:
            return 0
        offset = _now(CLOCK_REALTIME) - _now(CLOCK_MONOTONIC)
        for rounds in range(64):  # more than EVENTS readable sockets: take the next ones
            ready = epoll_wait(self._epoll, self._events, EVENTS, 0)
            for i in range(ready):
                sock = self._sockets.get(self._events[i].data.fd)
                if sock is not None:
                    total += _drain(sock, offset)
            if ready < EVENTS:
                break
        return total

    def close(self):
        if self._epoll >= 0:
            close_fd(self._epoll)
            self._epoll = -1
        self._sockets.clear()


cdef enum:
    SHARED_BATCH = 64  # datagrams per recvmmsg(2) or sendmmsg(2) call of a SharedSocket
    SHARED_QUEUE = 512  # datagrams queued for sending before a flush is forced
    SHARED_BUFFER = 256  # bytes per queued datagram; longer ones are sent at once
    SHARED_ROUNDS = 64  # recvmmsg calls per drain at most (4,096 datagrams; the rest wait a tick)


cdef inline uint64_t _route_key(sockaddr_in *address) noexcept nogil:
    return (<uint64_t>address.sin_addr.s_addr << 16) | address.sin_port  # network byte order, both


cdef int _ipv4(object addr, sockaddr_in *out) except -1:
    """``(host, port)`` with a numeric IPv4 host into ``out``; ValueError otherwise."""
    host, port = addr[0], addr[1]
    encoded = host.encode("ascii") if isinstance(host, str) else bytes(host)
    memset(out, 0, sizeof(sockaddr_in))
    if inet_pton(AF_INET, encoded, &out.sin_addr) != 1:
        raise ValueError(f"not a numeric IPv4 address: {host!r}")
    out.sin_family = AF_INET
    out.sin_port = htons(port)
    return 0


cdef class SharedSocket:
    """One bound IPv4 UDP socket for many peers at once (a load tester's calls).

    Each datagram goes to the handler :meth:`route` gave its source address, as
    ``handler(data, source, arrival)`` with ``source`` the very tuple routed (datagrams from other
    sources are counted in ``unrouted`` and dropped). :meth:`drain` reads them 64 at a time with
    one ``recvmmsg(2)``; sends (through a :class:`SharedSender` per peer) are queued and leave
    together, 64 a ``sendmmsg(2)``, at :meth:`flush`, which :meth:`drain` calls first.
    """

    cdef readonly object sock
    cdef readonly int fd
    cdef readonly long long received, unrouted, sent, send_errors
    cdef dict _routes  # route key -> (handler, source tuple)
    cdef mmsghdr *_in
    cdef iovec *_in_vectors
    cdef sockaddr_in *_in_names
    cdef char *_in_data
    cdef char *_in_controls
    cdef mmsghdr *_out
    cdef iovec *_out_vectors
    cdef sockaddr_in *_out_names
    cdef char *_out_data
    cdef int _queued

    def __cinit__(self):
        self.fd = -1
        self._in = <mmsghdr *>malloc(SHARED_BATCH * sizeof(mmsghdr))
        self._in_vectors = <iovec *>malloc(SHARED_BATCH * sizeof(iovec))
        self._in_names = <sockaddr_in *>malloc(SHARED_BATCH * sizeof(sockaddr_in))
        self._in_data = <char *>malloc(SHARED_BATCH * BUFFER)
        self._in_controls = <char *>malloc(SHARED_BATCH * CONTROL)
        self._out = <mmsghdr *>malloc(SHARED_QUEUE * sizeof(mmsghdr))
        self._out_vectors = <iovec *>malloc(SHARED_QUEUE * sizeof(iovec))
        self._out_names = <sockaddr_in *>malloc(SHARED_QUEUE * sizeof(sockaddr_in))
        self._out_data = <char *>malloc(SHARED_QUEUE * SHARED_BUFFER)
        if (self._in == NULL or self._in_vectors == NULL or self._in_names == NULL or self._in_data == NULL
                or self._in_controls == NULL or self._out == NULL or self._out_vectors == NULL
                or self._out_names == NULL or self._out_data == NULL):
            raise MemoryError()

    def __dealloc__(self):
        free(self._in)
        free(self._in_vectors)
        free(self._in_names)
        free(self._in_data)
        free(self._in_controls)
        free(self._out)
        free(self._out_vectors)
        free(self._out_names)
        free(self._out_data)

    def __init__(self, sock):
        cdef int on = 1
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        setsockopt(self.fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on))
        self._routes = {}
        self._queued = 0

    def route(self, object source, object handler):
        """Hand datagrams from ``source`` (a numeric IPv4 ``(host, port)``) to ``handler``; None: stop."""
        cdef sockaddr_in address
        _ipv4(source, &address)
        key = _route_key(&address)
        if handler is None:
            self._routes.pop(key, None)
        else:
            self._routes[key] = (handler, (source[0], source[1]))

    def routed(self, object source):
        """The handler datagrams from ``source`` go to (None: none)."""
        cdef sockaddr_in address
        _ipv4(source, &address)
        entry = self._routes.get(_route_key(&address))
        return None if entry is None else entry[0]

    cdef int queue(self, bytes data, sockaddr_in *destination) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef int i
        if self.fd < 0:
            return 0
        if size > SHARED_BUFFER:
            self.flush()
            if sendto(self.fd, PyBytes_AS_STRING(data), size, 0, <sockaddr *>destination,
                      sizeof(sockaddr_in)) < 0:
                self.send_errors += 1
            else:
                self.sent += 1
            return 0
        if self._queued == SHARED_QUEUE:
            self.flush()
        i = self._queued
        memcpy(self._out_data + i * SHARED_BUFFER, PyBytes_AS_STRING(data), size)
        memcpy(&self._out_names[i], destination, sizeof(sockaddr_in))
        self._out_vectors[i].iov_base = self._out_data + i * SHARED_BUFFER
        self._out_vectors[i].iov_len = size
        memset(&self._out[i], 0, sizeof(mmsghdr))
        self._out[i].msg_hdr.msg_name = &self._out_names[i]
        self._out[i].msg_hdr.msg_namelen = sizeof(sockaddr_in)
        self._out[i].msg_hdr.msg_iov = &self._out_vectors[i]
        self._out[i].msg_hdr.msg_iovlen = 1
        self._queued = i + 1
        return 0

    cpdef int flush(self) except -1:
        """Send what is queued; a datagram the kernel refuses (full buffer, ICMP error) is dropped and counted."""
        cdef int done = 0, count, batch
        while done < self._queued:
            batch = min(self._queued - done, SHARED_BATCH)
            count = sendmmsg(self.fd, &self._out[done], batch, MSG_DONTWAIT)
            if count <= 0:
                self.send_errors += 1  # the first of the batch failed: drop it, go on with the rest
                done += 1
            else:
                self.sent += count
                done += count
        self._queued = 0
        return done

    cpdef int drain(self, double clock_offset) except -1:
        """Flush the sends, then hand every waiting datagram to its route; returns how many were read."""
        cdef int i, count, total = 0, rounds
        cdef double fallback
        cdef msghdr *header
        cdef tuple entry
        if self.fd < 0:
            return 0
        self.flush()
        for rounds in range(SHARED_ROUNDS):
            for i in range(SHARED_BATCH):
                self._in_vectors[i].iov_base = self._in_data + i * BUFFER
                self._in_vectors[i].iov_len = BUFFER
                header = &self._in[i].msg_hdr
                header.msg_name = &self._in_names[i]
                header.msg_namelen = sizeof(sockaddr_in)
                header.msg_iov = &self._in_vectors[i]
                header.msg_iovlen = 1
                header.msg_control = self._in_controls + i * CONTROL
                header.msg_controllen = CONTROL
                header.msg_flags = 0
            count = recvmmsg(self.fd, self._in, SHARED_BATCH, MSG_DONTWAIT, NULL)
            if count <= 0:
                break
            total += count
            fallback = _now(CLOCK_MONOTONIC)
            for i in range(count):
                header = &self._in[i].msg_hdr
                self.received += 1
                if header.msg_flags & MSG_TRUNC or self._in_names[i].sin_family != AF_INET:
                    self.unrouted += 1
                    continue
                entry = self._routes.get(_route_key(&self._in_names[i]))
                if entry is None:
                    self.unrouted += 1
                    continue
                entry[0](PyBytes_FromStringAndSize(self._in_data + i * BUFFER, self._in[i].msg_len),
                         entry[1], _arrival(header, fallback, clock_offset))
                if self.fd < 0:  # a handler closed the socket
                    return total
            if count < SHARED_BATCH:
                break
        return total

    def close(self):
        self._routes.clear()
        self._queued = 0
        self.fd = -1
        self.sock.close()


cdef class SharedSender:
    """Sends datagrams through a :class:`SharedSocket`, keeping the last destination's ``sockaddr``;
    ``muted`` drops them instead."""

    cdef SharedSocket _socket
    cdef sockaddr_in _destination
    cdef object _destination_tuple
    cdef public bint muted

    def __init__(self, SharedSocket socket):
        self._socket = socket
        self._destination_tuple = None
        self.muted = False

    cpdef sendto(self, bytes data, object addr):
        """Queue one datagram for ``addr`` (a numeric IPv4 ``(host, port)``); it leaves at the next flush."""
        if self.muted:
            return
        if addr is not self._destination_tuple:
            if self._destination_tuple is None or addr != self._destination_tuple:
                _ipv4(addr, &self._destination)
            self._destination_tuple = addr
        self._socket.queue(data, &self._destination)
