"""Where the lifespan state keeps the ERP connector's services (typed)."""

from __future__ import annotations

from connectors.erp.service import ErpServices
from issuer.state import StateKey

ERP_SERVICES: StateKey[ErpServices] = StateKey("erp")
