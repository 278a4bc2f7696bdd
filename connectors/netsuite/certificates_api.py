"""NetSuite's certificate API for M2M mappings (article_0209112025,
article_0209112818, article_11111634165, article_92130837826).

``POST {restlets}/services/rest/auth/oauth2/v1/clients/{clientId}/certificates`` with JSON
``{"fileContent": <PEM>, "role": <id>, "entity": <id>}`` uploads a certificate; ``POST
.../certificates/{certId}/revoke`` revokes one. Both take a bearer token with the
``rest_webservices`` scope (ours, through :class:`NetSuiteAuth`). The upload answer's
shape is not documented in our sources: the Certificate ID is read from
``certificateId`` or ``id``, else from a ``Location`` header.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx

from connectors.netsuite.errors import NetSuiteError
from connectors.netsuite.token_client import json_object

log = logging.getLogger(__name__)
CLIENTS_PATH = "/services/rest/auth/oauth2/v1/clients"


class CertificateApiFailed(NetSuiteError):
    """NetSuite's certificate API refused the call; the message carries its detail."""


class CertificateApi:
    def __init__(self, http: httpx.AsyncClient, auth: httpx.Auth, base_url: str,
                 client_id: str) -> None:
        self._http = http
        self._auth = auth
        self._url = f"{base_url.rstrip('/')}{CLIENTS_PATH}/{quote(client_id, safe='')}" \
                    "/certificates"

    async def upload(self, pem: str, *, entity: int, role: int) -> str:
        """Upload ``pem`` for (entity, role); NetSuite's new Certificate ID."""
        response = await self._send("POST", self._url,
                                    json={"fileContent": pem, "role": role, "entity": entity})
        data = json_object(response)
        found = data.get("certificateId") or data.get("id")
        if not found and "location" in response.headers:
            found = response.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        if not isinstance(found, str) or not found:
            raise CertificateApiFailed("NetSuite's certificate API answered without a "
                                       "Certificate ID")
        return found

    async def revoke(self, certificate_id: str) -> None:
        await self._send("POST", f"{self._url}/{quote(certificate_id, safe='')}/revoke")

    async def _send(self, method: str, url: str, json: object = None) -> httpx.Response:
        try:
            response = await self._http.request(method, url, auth=self._auth, json=json)
        except httpx.HTTPError as error:
            raise CertificateApiFailed(f"NetSuite's certificate API could not be reached "
                                       f"({type(error).__name__})") from None
        if not response.is_success:
            details = json_object(response).get("o:errorDetails")
            detail = ""
            if isinstance(details, list) and details and isinstance(details[0], dict):
                detail = str(details[0].get("detail", ""))[:300]
            log.warning("NetSuite's certificate API answered HTTP %d", response.status_code)
            raise CertificateApiFailed(f"NetSuite's certificate API answered HTTP "
                                       f"{response.status_code}" + (f": {detail}" if detail
                                                                    else ""))
        return response

