# Cython declarations that compile stream.py's RtpStream to C (see setup.py).
import cython

from parley.media.jitter cimport JitterBuffer
from parley.media.rtp cimport ReceptionStats, RtpSender

cdef long long FRAME_SAMPLES, CLOCK_RATE, RTCP_INTERVAL_TICKS, INACTIVITY_CHECK_TICKS


@cython.final
cdef class RtpStream:
    cdef public str codec, cname
    cdef public long long payload_type, rtcp_in
    cdef public long long packets_in, packets_out, strangers, malformed, unknown_payload, dtmf_in
    cdef public object remote, latched, dtmf
    cdef object _destination
    cdef long long _dtmf_pt
    cdef public object on_audio, on_dtmf, on_inactive
    cdef public RtpSender sender
    cdef public JitterBuffer jitter
    cdef public ReceptionStats reception
    cdef public bint sending, receiving
    cdef public double inactivity_timeout, started, last_rx
    cdef object _send, _time, _send_rtcp, _playbacks, _dtmf_out, _last_pcm, _previous, _last_sr_at
    cdef bytes _silence, _reframe_buffer
    cdef long long _losses, _event_ts, _reframe_next_ts, _reframe_start_ts, _reframe_ssrc, _ticks, _last_sr
    cdef bint _inactive_reported

    @cython.locals(raw=bytes, pt=cython.longlong, sequence=cython.longlong, timestamp=cython.longlong,
                   ssrc=cython.longlong, now=cython.double, arrival_ts=cython.longlong)
    cpdef receive(self, data, source, double arrival=*)
    cpdef play_frame(self, pcm)
    cpdef _next_frame(self)
    cpdef pull(self)
    cpdef deliver(self, pcm)
    cpdef next_out(self)
    cpdef send_payload(self, payload)
    @cython.locals(ticks=cython.longlong)
    cpdef housekeeping(self)
