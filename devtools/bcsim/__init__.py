"""Dev-only Business Central API v2.0 + Microsoft Entra ID simulator (one HTTPS port, own CA).

    with BCSimulator(seed=42) as sim:
        # BC_API_BASE_URL = AZURE_AUTHORITY_HOST = sim.base_url; SSL_CERT_FILE = sim.ca_path
        sim.company().update("vendors", vendor_id, displayName="Renamed")

Never deployed and never reads ../shared: its data is generated, shaped on captured BC responses.
"""
from __future__ import annotations

from .auth import BC_SCOPE
from .faults import Fault, FaultPlan, Hold
from .odata import ODataError
from .seed import BLANK_DATE, BLANK_ENUM, ZERO_GUID, fmt_dt, parse_dt
from .simulator import (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_COMPANY_NAME, DEMO_DECLINING_USER,
                        DEMO_ENVIRONMENT, DEMO_OAUTH_CLIENT_ID, DEMO_OAUTH_CLIENT_SECRET, DEMO_TENANT_DOMAIN, DEMO_TENANT_ID,
                        DEMO_US_COMPANY_ID, DEMO_US_COMPANY_NAME, DEMO_USER, BCSimulator, RecordedRequest)
from .store import CompanyStore

__all__ = [
    "BCSimulator", "CompanyStore", "RecordedRequest", "Fault", "FaultPlan", "Hold", "ODataError", "BC_SCOPE",
    "DEMO_TENANT_ID", "DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "DEMO_ENVIRONMENT", "DEMO_COMPANY_ID",
    "DEMO_COMPANY_NAME", "DEMO_US_COMPANY_ID", "DEMO_US_COMPANY_NAME", "DEMO_OAUTH_CLIENT_ID", "DEMO_TENANT_DOMAIN",
    "DEMO_OAUTH_CLIENT_SECRET", "DEMO_USER", "DEMO_DECLINING_USER", "ZERO_GUID", "BLANK_DATE", "BLANK_ENUM",
    "fmt_dt", "parse_dt",
]
