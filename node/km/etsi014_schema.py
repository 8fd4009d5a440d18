"""The OpenAPI 3.1 document the ETSI GS QKD 014 server serves about itself.

It describes exactly the routes :mod:`.etsi014` registers, their parameters, the
specification's data formats (Status, Key request, Key container, Key IDs, Error) and the only
statuses the server answers with (200, 400, 401, 503). Tests fuzz the server from this document,
so a route or field added to one and not the other shows up as a test failure.
"""

from __future__ import annotations

import copy
from typing import Any

from .etsi014_requests import MAX_SAE_ID_LENGTH

__all__ = ["API_PREFIX", "OPENAPI_PATH", "openapi_document"]

API_PREFIX = "/api/v1/keys"
OPENAPI_PATH = "/api/v1/openapi.json"

_REF = "#/components/schemas/"


def _sae_param(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": doc,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SAE_ID_LENGTH}}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


_ERRORS = {
    "400": {"description": "Bad request format (the message says what was wrong).",
            "content": _json("Error")},
    "401": {"description": "Unauthorized: the caller's certificate names no SAE, or an SAE "
                           "that may not make this request.",
            "content": _json("Error")},
    "503": {"description": "Error on the KME's side: not enough key in the pool, or a "
                           "temporary fault (the message says which); the request may be "
                           "retried.",
            "content": _json("Error")},
}


def _answers(ok: str, schema: str) -> dict[str, Any]:
    return {"200": {"description": ok, "content": _json(schema)}, **_ERRORS}


_SCHEMAS: dict[str, Any] = {
    "Status": {
        "type": "object",
        "required": ["source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID",
                     "key_size", "stored_key_count", "max_key_count", "max_key_per_request",
                     "max_key_size", "min_key_size", "max_SAE_ID_count"],
        "properties": {
            "source_KME_ID": {"type": "string"},
            "target_KME_ID": {"type": "string"},
            "master_SAE_ID": {"type": "string"},
            "slave_SAE_ID": {"type": "string"},
            "key_size": {"type": "integer", "description": "default key size, bits"},
            "stored_key_count": {"type": "integer",
                                 "description": "keys of the default size available"},
            "max_key_count": {"type": "integer"},
            "max_key_per_request": {"type": "integer"},
            "max_key_size": {"type": "integer", "description": "bits"},
            "min_key_size": {"type": "integer", "description": "bits"},
            "max_SAE_ID_count": {"type": "integer",
                                 "description": "most additional_slave_SAE_IDs per request"},
            "status_extension": {"type": "object"},
        },
    },
    "KeyRequest": {
        "type": "object",
        "description": "Unknown fields are ignored.",
        "properties": {
            "number": {"type": "integer", "minimum": 1, "default": 1},
            "size": {"type": "integer", "minimum": 8, "multipleOf": 8,
                     "description": "bits; the status's key_size by default"},
            "additional_slave_SAE_IDs": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_SAE_ID_LENGTH}},
            "extension_mandatory": {
                "type": "array", "items": {"type": "object"},
                "description": "this KME supports no extension parameter: a non-empty object "
                               "here is answered 400"},
            "extension_optional": {"type": "array", "items": {"type": "object"},
                                   "description": "ignored"},
        },
    },
    "KeyContainer": {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {"type": "array", "items": {
                "type": "object",
                "required": ["key_ID", "key"],
                "properties": {
                    "key_ID": {"type": "string", "format": "uuid"},
                    "key_ID_extension": {"type": "object"},
                    "key": {"type": "string", "contentEncoding": "base64"},
                    "key_extension": {"type": "object"},
                }}},
            "key_container_extension": {"type": "object"},
        },
    },
    "KeyIDs": {
        "type": "object",
        "required": ["key_IDs"],
        "description": "Unknown fields, in the object and in its entries, are ignored.",
        "properties": {
            "key_IDs": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["key_ID"],
                "properties": {
                    "key_ID": {"type": "string", "format": "uuid"},
                    "key_ID_extension": {"type": "object"},
                }}},
            "key_IDs_extension": {"type": "object"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    },
}

_SLAVE = _sae_param("slave_SAE_ID", "the slave SAE the keys are to be shared with")
_MASTER = _sae_param("master_SAE_ID", "the master SAE that obtained the keys")
_NUMBER = {"name": "number", "in": "query", "required": False,
           "schema": {"type": "integer", "minimum": 1, "default": 1}}
_SIZE = {"name": "size", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 8, "multipleOf": 8}}
_KEY_ID = {"name": "key_ID", "in": "query", "required": True,
           "schema": {"type": "string", "format": "uuid"}}

_PATHS: dict[str, Any] = {
    API_PREFIX + "/{slave_SAE_ID}/status": {
        "get": {"operationId": "getStatus", "summary": "Status of the keys shared with a slave",
                "parameters": [_SLAVE], "responses": _answers("Status", "Status")},
    },
    API_PREFIX + "/{slave_SAE_ID}/enc_keys": {
        "get": {"operationId": "getKey", "summary": "Get keys (master SAE)",
                "parameters": [_SLAVE, _NUMBER, _SIZE],
                "responses": _answers("Key container", "KeyContainer")},
        "post": {"operationId": "postKey", "summary": "Get keys (master SAE)",
                 "parameters": [_SLAVE],
                 "requestBody": {"required": False, "content": _json("KeyRequest")},
                 "responses": _answers("Key container", "KeyContainer")},
    },
    API_PREFIX + "/{master_SAE_ID}/dec_keys": {
        "get": {"operationId": "getKeyWithKeyIDs", "summary": "Get a key by ID (slave SAE)",
                "parameters": [_MASTER, _KEY_ID],
                "responses": _answers("Key container", "KeyContainer")},
        "post": {"operationId": "postKeyWithKeyIDs", "summary": "Get keys by ID (slave SAE)",
                 "parameters": [_MASTER],
                 "requestBody": {"required": True, "content": _json("KeyIDs")},
                 "responses": _answers("Key container", "KeyContainer")},
    },
    OPENAPI_PATH: {
        "get": {"operationId": "getOpenApi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}},
                              **_ERRORS}},
    },
}


def openapi_document(kme_id: str) -> dict[str, Any]:
    """The document (a fresh copy: callers may change it).

    Args:
        kme_id: this KME's ID, named in the title.
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"ETSI GS QKD 014 key delivery, KME {kme_id}",
            "version": "1.1.1",
            "description": "Key delivery to SAEs over HTTPS with mutual TLS. The caller's SAE ID "
                           "is the subject common name of its client certificate.",
        },
        "paths": copy.deepcopy(_PATHS),
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"mutualTLS": {
                "type": "mutualTLS",
                "description": "client certificate from the KME's CA; subject CN = SAE ID"}},
        },
        "security": [{"mutualTLS": []}],
    }
