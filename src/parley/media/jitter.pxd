# Cython declarations that compile jitter.py's JitterBuffer to C (see setup.py).
import cython

cdef long long _MASK32, _HALF32, _NO_RMIN, _NO_RMAX
cdef unsigned long long _MASK64


@cython.final
cdef class JitterBuffer:
    cdef long long _cur_rmax, _cur_rmin, _holding, _last_ts, _newest, _next_slot, _next_ts
    cdef long long _played, _prebuffer, _prev_spread, _received, _ssrc, _stretch, _transit
    cdef long long _win_events, _win_min_level, _win_pops
    cdef unsigned long long _seen
    cdef bint _have_transit, _synced
    cdef double _jitter
    cdef list _ring
    cdef long long _mask, _count
    cdef object _stats
    cdef public long long adapt_window, clock_rate, frame_samples, max_delay, min_delay, resync_frames, target

    cpdef _reset_window(self)
    cpdef _resync(self, slot_payload, long long timestamp, long long ssrc, bint hard)
    cpdef push(self, packet, long long arrival_ts)
    @cython.locals(slot_off=cython.longlong, back=cython.longlong, slot=cython.longlong,
                   excess=cython.longlong, hard=cython.bint, ring=list)
    cpdef insert(self, payload, long long timestamp, long long ssrc, long long arrival_ts)
    @cython.locals(transit=cython.longlong, d=cython.longlong)
    cpdef _observe(self, long long timestamp, long long arrival_ts)
    @cython.locals(index=cython.longlong, ring=list)
    cpdef _skip(self, long long count, bint overflow)
    @cython.locals(slot=cython.longlong, level=cython.longlong, index=cython.longlong)
    cpdef pop(self)
    @cython.locals(spread=cython.longlong, current=cython.longlong, desired=cython.longlong,
                   grow=cython.longlong)
    cpdef _adapt(self)
