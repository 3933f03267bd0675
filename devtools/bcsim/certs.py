"""A throwaway CA (trustme) so clients verify TLS for real instead of turning verification off."""
from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Certs:
    ca_path: str
    server_context: ssl.SSLContext
    tmpdir: tempfile.TemporaryDirectory[str]


def make_certs() -> Certs:
    """CA + a 127.0.0.1/localhost leaf; the CA PEM goes to a temp dir for SSL_CERT_FILE & co."""
    ca = trustme.CA(organization_name="BC simulator dev CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    tmp = tempfile.TemporaryDirectory(prefix="bcsim-")
    ca_path = str(Path(tmp.name) / "bcsim-ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    return Certs(ca_path, ctx, tmp)
