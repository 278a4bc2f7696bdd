"""Where the lifespan state keeps the NetSuite connector's service (typed)."""

from __future__ import annotations

from connectors.netsuite.service import NetSuiteM2MService
from issuer.state import StateKey

NETSUITE_SERVICE: StateKey[NetSuiteM2MService] = StateKey("netsuite")
