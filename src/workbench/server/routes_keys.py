"""Routes of the admin's key management: `/v1/keys` (see `server.keys`).

    POST   /v1/keys            {"name": "scorer-app", "read_only": false} → the key, once
    GET    /v1/keys            every key (id, name, read_only, created_at, revoked_at)
    DELETE /v1/keys/{key_id}   revoke: refused from the next request on

Only the admin key reaches these (the auth middleware answers 403 to a minted key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from workbench.server.auth import current_caller
from workbench.server.errors import APIError
from workbench.server.keys import Caller, KeyCreated, KeyInfo, KeyNotFound, KeyProblem, KeyStore

KeyId = Annotated[str, Path(min_length=1, max_length=200)]


class KeyCreate(BaseModel):
    """`POST /v1/keys` body."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who holds it (an app's name)")
    read_only: bool = Field(default=False, description="list and read only: no create, "
                                                       "cancel or delete")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyInfo]


def admin_only(who: Annotated[Caller, Depends(current_caller)]) -> None:
    """Second line behind the middleware: key management is the admin's."""
    if not who.admin:
        raise APIError(403, "only the admin key (WORKBENCH_API_KEY) manages keys",
                       code="insufficient_permissions")


def keys_router(keys: KeyStore, deps: list[Any],
                responses: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter(prefix="/v1", dependencies=[*deps, Depends(admin_only)],
                  responses=responses, tags=["keys"])

    @r.post("/keys", response_model=KeyCreated)
    def create_key(req: KeyCreate) -> KeyCreated:
        """Mint a key; `key` is in this answer only (the store keeps a salted hash)."""
        try:
            return keys.create(req.name, req.read_only)
        except KeyProblem as e:
            raise APIError(400, str(e), param="name", code="invalid_value") from None

    @r.get("/keys", response_model=KeyList)
    def list_keys() -> KeyList:
        return KeyList(data=keys.list())

    @r.delete("/keys/{key_id}", response_model=KeyInfo)
    def revoke_key(key_id: KeyId) -> KeyInfo:
        """Revoke a key (by id); it is kept in the list with `revoked_at`."""
        try:
            if not key_id.startswith("key_"):
                raise KeyNotFound(key_id)
            return keys.revoke(key_id)
        except KeyNotFound:
            raise APIError(404, f"No such key: {key_id[:100]}", param="key_id",
                           code="key_not_found") from None

    return r
