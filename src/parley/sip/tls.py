"""SIP over TLS (RFC 3261 §26.2, RFC 5630): certificates from files, Python's ``ssl`` contexts.

The server presents ``cert_file``/``key_file``. With ``verify_client`` it asks every client for a
certificate signed by ``ca_file`` and refuses the connection without one (mutual TLS, e.g. with a
trunk or a load balancer). Outbound connections (``sips:`` or ``;transport=tls`` targets) check the
peer's certificate against ``ca_file`` (the system's store without one), and its name when the
target was given by name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    port: int = 5061
    ca_file: Path | None = None
    verify_client: bool = False

    def __post_init__(self) -> None:
        if self.verify_client and self.ca_file is None:
            raise ValueError("checking client certificates needs a CA file")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.verify_client:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)  # our certificate, for peers that ask
        return context
