"""NetSuite OAuth 2.0 client credentials (M2M) connector.

The public face; the code lives in the modules named beside each name.
"""

from connectors.netsuite.accounts import DisallowedUrl, InvalidAccountId, check_account_id
from connectors.netsuite.assertion import create_assertion
from connectors.netsuite.auth import NetSuiteAuth
from connectors.netsuite.client import Backoff, NetSuiteClient, Throttle
from connectors.netsuite.connector import ConnectorRecord, ConnectorSpec
from connectors.netsuite.errors import (
    ConnectorNotFound,
    InvalidConnector,
    KeyPairExists,
    NetSuiteError,
    NoCertificateId,
    NoKeyPair,
    NoRotationInProgress,
    RotationBusy,
    RotationInProgress,
)
from connectors.netsuite.keys import CertificateSubject, generate_certificate, generate_key_pair
from connectors.netsuite.kms import KeyManagementService
from connectors.netsuite.service import CertificateProfile, NetSuiteM2MService, from_settings
from connectors.netsuite.strategies import (
    NETSUITE_M2M,
    AuthStrategies,
    AuthStrategy,
    NetSuiteM2MStrategy,
    UnknownAuthType,
)
from connectors.netsuite.token_client import AccessToken, TokenRequestFailed

__all__ = [
    "NETSUITE_M2M",
    "AccessToken",
    "AuthStrategies",
    "AuthStrategy",
    "Backoff",
    "CertificateProfile",
    "CertificateSubject",
    "ConnectorNotFound",
    "ConnectorRecord",
    "ConnectorSpec",
    "DisallowedUrl",
    "InvalidAccountId",
    "InvalidConnector",
    "KeyManagementService",
    "KeyPairExists",
    "NetSuiteAuth",
    "NetSuiteClient",
    "NetSuiteError",
    "NetSuiteM2MService",
    "NetSuiteM2MStrategy",
    "NoCertificateId",
    "NoKeyPair",
    "NoRotationInProgress",
    "RotationBusy",
    "RotationInProgress",
    "Throttle",
    "TokenRequestFailed",
    "UnknownAuthType",
    "check_account_id",
    "create_assertion",
    "from_settings",
    "generate_certificate",
    "generate_key_pair",
]
