# Cython declarations that compile listen.py's PacketTap to C (see setup.py).
import cython


@cython.final
cdef class PacketTap:
    cdef public long long payload_type, packets, gaps
    cdef public double gap_s, last_arrival
    cdef public object receive, on_loud
    cdef bytes _loud

    @cython.locals(size=cython.Py_ssize_t, header=cython.Py_ssize_t, k=cython.Py_ssize_t, loud=bytes)
    cpdef feed(self, bytes data, double arrival)
