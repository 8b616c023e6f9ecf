# Cython declarations that compile rtp.py's per-packet classes to C (see setup.py).
import cython

cdef long long SEQ_MOD, MAX_DROPOUT, MAX_MISORDER
cdef unsigned long long _MASK64, _ONE


@cython.final
cdef class RtpSender:
    cdef public long long octets_sent, packets_sent, payload_type, sequence, ssrc, timestamp

    @cython.locals(pt=cython.longlong)
    cpdef bytes packet(self, payload, long long samples=*, bint marker=*, payload_type=*)
    @cython.locals(pt=cython.longlong)
    cpdef bytes packet_at(self, payload, long long timestamp, bint marker=*, payload_type=*)
    cpdef advance(self, long long samples)


@cython.final
cdef class ReceptionStats:
    cdef long long _bad_seq, _base_seq, _cycles, _expected_prior, _last_ts, _max_seq, _probation
    cdef long long _received, _received_prior, _ssrc, _transit
    cdef unsigned long long _seen
    cdef bint _have_transit
    cdef double _jitter
    cdef public long long clock_rate, duplicates, min_sequential, out_of_order

    cpdef _reset(self)
    cpdef _init_seq(self, long long seq)
    cpdef bint update(self, packet, long long arrival_ts)
    @cython.locals(max_seq=cython.longlong, udelta=cython.longlong, transit=cython.longlong,
                   d=cython.longlong, back=cython.longlong)
    cpdef bint update_header(self, long long seq, long long timestamp, long long ssrc, long long arrival_ts)
