# Cython declarations that compile listen.py's PacketTap to C (see setup.py).
import cython

from parley.media.stream cimport RtpStream

cdef long long CLOCK_RATE, PLAIN_FRAME


@cython.final
cdef class PacketTap:
    cdef public RtpStream stream
    cdef public long long payload_type, packets, gaps
    cdef public double gap_s, last_arrival
    cdef public object on_loud
    cdef bytes _loud

    @cython.locals(size=cython.Py_ssize_t, header=cython.Py_ssize_t, k=cython.Py_ssize_t, loud=bytes)
    cpdef bint feed(self, bytes data, object source, double arrival)
    @cython.locals(stream=RtpStream, sequence=cython.longlong, timestamp=cython.longlong, ssrc=cython.longlong,
                   arrival_ts=cython.longlong)
    cdef bint _received(self, bytes data, object source, double arrival)
