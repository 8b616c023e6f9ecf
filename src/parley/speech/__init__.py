"""Speech: streaming ASR engines and the per-question arbiter, VAD/endpointing, barge-in, TTS."""
