"""(work in progress)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from issuer.admin.http import Operation

routes: list[BaseRoute] = []
operations: list[Operation] = []
