# Cython declarations for clock.py (see setup.py): the per-stream records its loops read in C.
import cython


@cython.final
cdef class _Phases:
    cdef public object codec, deliver, housekeeping, next_out, pull, send_payload, stream


@cython.locals(stream=_Phases, i=cython.Py_ssize_t)
cpdef _by_codec(list streams, list frames, wanted)
@cython.locals(stream=_Phases, i=cython.Py_ssize_t, row=cython.Py_ssize_t)
cpdef _decode_and_deliver(list streams, list payloads)
@cython.locals(stream=_Phases, i=cython.Py_ssize_t, row=cython.Py_ssize_t)
cpdef _encode_and_send(list streams, list outgoing)
@cython.locals(stream=_Phases)
cpdef list _pull_all(list streams)
@cython.locals(stream=_Phases)
cpdef list _next_out_all(list streams)
@cython.locals(stream=_Phases)
cpdef _housekeeping_all(list streams)
@cython.locals(k=cython.Py_ssize_t)
cpdef _lookup_bytes(const short[:] table, const unsigned char[:] source, short[:] out)
@cython.locals(k=cython.Py_ssize_t)
cpdef _lookup_samples(const unsigned char[:] table, const unsigned short[:] source, unsigned char[:] out)
