"""The Inkweld-compatible facade: the writing app's own API, mapped onto Atelier's services.

`create_inkweld_router` serves the operations of the app's document (`openapi.json`, a copy of
`shared/reference/inkweld-openapi-imagegen.json`) under `/api/v1`; docs/inkweld.md lists each
route and what it maps to, docs/adr/0008-inkweld-facade.md why it is built this way.
"""

from atelier_gateway.inkweld.api import create_inkweld_router
from atelier_gateway.inkweld.settings import InkweldSettings

__all__ = ["InkweldSettings", "create_inkweld_router"]
