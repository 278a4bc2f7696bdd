"""NETSUITE_REST_V1: the ERP connector that upserts draft orders as NetSuite sales
orders through the org's NetSuite M2M connector (``connectors.netsuite``).

``connectors.erp.plugin`` registers it (it needs the app's NetSuite M2M service) and
mounts :mod:`connectors.erp.netsuite_rest.routes` ahead of the generic ERP routes.
"""

from connectors.erp.netsuite_rest.calls import NetSuiteRequests
from connectors.erp.netsuite_rest.config import NetSuiteRestConfig
from connectors.erp.netsuite_rest.connector import NETSUITE_REST_V1, NetSuiteRestConnector

__all__ = ["NETSUITE_REST_V1", "NetSuiteRequests", "NetSuiteRestConfig",
           "NetSuiteRestConnector"]
