"""The Aquarius-compatible routes of the Ocean Node personality: what a real Ocean Node (v3.1.0, the release
:mod:`ocean_sandbox.node_release` follows) answers on ``/api/aquarius/...``.

The matcher (:func:`ocean_sandbox.aquarius_api.matches`) and the DDO checks
(:func:`ocean_sandbox.aquarius_api.validate_ddo`) are the Provider v4 personality's; only the framing is the
node's. Every answer is ``(status, body)``: a ``str`` body is what Express's ``res.send(text)`` sends
(``text/html``), anything else is ``res.json(body)``.

Upstream files read (oceanprotocol/ocean-node): ``src/components/httpRoutes/aquarius.ts`` (commit
``0c03d90b``), ``src/components/core/handler/ddoHandler.ts`` (``FindDdoHandler.findAndFormatDdo``,
``ValidateDDOHandler``, ``validateDDOIdentifier``), ``src/components/core/handler/queryHandler.ts``
(``36184def``), ``src/components/core/handler/handler.ts``, ``src/components/httpRoutes/validateCommands.ts``,
``src/components/database/ElasticSearchMetadataQuery.ts`` (``7c70bf26``),
``src/components/database/ElasticSearchDatabase.ts`` (``ElasticsearchDdoDatabase.search``,
``normalizeDocumentId``), ``src/OceanNode.ts`` (``getValidationSignature``), ``src/utils/crypt.ts``
(``create256Hash``), the config schema (``validateUnsignedDDO`` defaults to ``true``); oceanprotocol/ddo.js
``src/services/ddoValidator.ts`` / ``ddoManager.ts`` (``V4DDO.validate``). The index holds no tagged v3.1.0
copy: these are the most recent stored versions; of the stored ``ddoHandler.ts`` versions the personality
follows the one before ids ``did:ope:`` were accepted (its id message is the unclosed one below).

What the node answers, and the personality with it:

- ``GET /api/aquarius/assets/ddo/:did[/:force]`` and ``GET /api/aquarius/assets/metadata/:did[/:force]`` (one
  handler): a ``did`` not starting with ``did:op`` → 400 ``Missing or invalid required parameter: "did"``;
  unknown → 404 ``DDO not found``; else 200 the DDO. ``force=true`` makes a real node ask its peers and
  answer a reduced DDO; the sandbox has no peers and answers its local DDO either way.
- ``POST /api/aquarius/assets/metadata/query`` (the node has no ``/api/aquarius/assets/query``: 404). A body
  whose ``query.bool`` is set is an Elasticsearch search and runs as is; any other body is a Typesense-style
  search (``filter_by`` ``field:=v`` / ``field:!=v`` / ``field:=[a,b]`` joined by `` && ``, ``start``,
  ``num_hits`` (default 10)) turned into ``bool`` ``term``/``terms`` filters, so a bare
  ``{"query": {"match": {...}}}`` matches *every* DDO. ``from`` is a **page number**
  (``offset = (from or 1) * size - size``; ``size`` defaults to 100 for an Elasticsearch body). The search
  runs once per DDO index (``op_ddo_v<version>``) and the answer is a JSON **list of lists**: one list of
  DDOs per index with hits (``[]`` when none). A query the database refuses is logged and skipped per
  index: still 200 (``[]``). A ``filter_by`` that is not a string → 500 ``Internal Server Error``.
- ``POST /api/aquarius/assets/ddo/validate`` with JSON ``{"ddo": {...}, "publisherAddress"?, "nonce"?,
  "signature"?}`` (+ optional ``Authorization``): no ``ddo`` → 400 ``Missing one ( "ddo" ) or more required
  field(s) for command: "validateDDO". Required fields: ddo``; an ``id`` not starting with ``did:op`` → 400
  `` Missing or invalid required parameter "id`` (leading space and unclosed quote are the node's); no
  ``version`` → 400 ``Missing DDO version``; a version not starting with 4 or 5 → 500
  ``Unknown error: Unsupported DDO version: <v>``; SHACL errors → 400 ``Validation error: [object Object]``
  (the node interpolates the error object into a template string); valid → 200
  ``{"hash", "publicKey", "r", "s", "v"}``: ``hash`` = ``create256Hash(JSON.stringify(ddo))`` (``0x`` +
  sha256 hex), the signature is EIP-191 by the node's key over the bytes of keccak256(the ``hash`` text)
  (``toBeArray``: leading zero bytes dropped), ``publicKey`` is the node's **address**, ``r``/``s`` are
  ``0x`` hex strings (not lists, unlike Aquarius) and ``v`` is 27/28. Sent publisher/nonce/signature or a
  token are checked first (``validateTokenOrSignature``, not read: the personality checks them as every
  signed command, ``address + nonce + "validateDDO"``, with the same 401 texts).

Where the sandbox differs (it has no Elasticsearch, no ddo.js):

- the SHACL checks are :func:`~ocean_sandbox.aquarius_api.validate_ddo`'s subset, without its ``@context``
  check (ddo.js replaces ``@context`` before validating); a 4.x version without a ddo.js schema (ddo.js has
  4.1.0, 4.3.0, 4.5.0, 4.7.0) and any 5.x DDO (no v5 shapes here) answer 500
  ``Unknown error: no SHACL schema for DDO version <v>`` (sandbox wording: the node's text comes from its
  file loader);
- Elasticsearch ``sort`` is accepted and ignored (DID order); ``term`` on text is case-insensitive;
- ``GET /api/aquarius/state/ddo`` (the node's indexing-state database) is not served;
- a body that is not JSON is refused before any route, as for every route of the personality.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from ocean_sandbox.aquarius_api import QueryError, matches, validate_ddo

#: ``(status, body)``: a ``str`` body is ``res.send`` (text/html), anything else ``res.json``.
Answer = tuple[int, Any]
#: Checks sent credentials; ``None`` when they pass (or none were sent), else the node's answer.
Authenticate = Callable[[dict[str, Any]], Answer | None]

BASE = "/api/aquarius"
METADATA_QUERY_PATH = BASE + "/assets/metadata/query"
VALIDATE_PATH = BASE + "/assets/ddo/validate"
DDO_PATH = re.compile(r"^/api/aquarius/assets/(?:ddo|metadata)/(?P<did>[^/]+)(?:/(?P<force>[^/]+))?$")
VALIDATE_COMMAND = "validateDDO"
DDO_JS_V4_SCHEMAS = ("4.1.0", "4.3.0", "4.5.0", "4.7.0")
DEFAULT_HITS = 10  # ElasticSearchMetadataQuery: num_hits || 10
DEFAULT_PAGE_SIZE = 100  # ElasticsearchDdoDatabase.search: size || 100
INTERNAL_ERROR = "Internal Server Error"


# -- GET ddo / metadata ---------------------------------------------------------------------------------
def ddo_answer(did: str, lookup: Callable[[str], dict[str, Any] | None]) -> Answer:
    """``GET .../assets/ddo/:did`` and ``.../assets/metadata/:did`` (one handler on the node).

    :param did: the path's DID.
    :param lookup: the stored DDO of a DID, or ``None``.
    """
    if not did.startswith("did:op"):
        return 400, 'Missing or invalid required parameter: "did"'
    ddo = lookup(did)
    if ddo is None:
        return 404, "DDO not found"
    return 200, ddo


# -- POST metadata/query --------------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value."""
    return value not in (None, False, 0, "") and not (isinstance(value, float) and math.isnan(value))


def _typesense_filters(filter_by: Any) -> tuple[list[Any], list[Any]]:
    """``filter_by`` → (``filter``, ``must_not``) clauses; :class:`TypeError` when it is not a string."""
    if not _truthy(filter_by):
        return [], []
    if not isinstance(filter_by, str):
        raise TypeError("filter_by.split is not a function")
    keep: list[Any] = []
    drop: list[Any] = []
    for part in filter_by.split(" && "):
        if "!=" in part:
            field, _, value = part.partition(":!=")
            drop.append({"term": {field: value}})
        elif ":=[" in part:
            field, _, value = part.partition(":=[")
            keep.append({"terms": {field: value.replace("]", "", 1).split(",")}})
        else:
            field, sep, value = part.partition(":=")
            keep.append({"term": {field: value if sep else None}})
    return keep, drop


def build_search(body: dict[str, Any]) -> dict[str, Any]:
    """``ElasticSearchMetadataQuery.buildQuery``: an Elasticsearch body (``query.bool`` set) passes as is."""
    query = body.get("query")
    if isinstance(query, dict) and "bool" in query:
        return body
    keep, drop = _typesense_filters(body.get("filter_by"))
    start, hits = body.get("start"), body.get("num_hits")
    return {
        "from": start if _truthy(start) else 0,
        "size": hits if _truthy(hits) else DEFAULT_HITS,
        "query": {"bool": {"filter": keep, "must_not": drop}},
    }


def _page(search: dict[str, Any]) -> tuple[int, int]:
    """(offset, size) as ``ElasticsearchDdoDatabase.search`` computes them: ``from`` is a page number."""
    size = search.get("size") if _truthy(search.get("size")) else DEFAULT_PAGE_SIZE
    page = search.get("from") if _truthy(search.get("from")) else 1
    size_n, page_n = int(size), int(page)
    offset = page_n * size_n - size_n
    if offset < 0 or size_n < 0:
        raise QueryError("[from] parameter cannot be negative")
    return offset, size_n


def _index_hits(docs: list[dict[str, Any]], search: dict[str, Any]) -> list[dict[str, Any]]:
    """One index's page of hits; a refused query is skipped (``[]``), as the node logs and continues."""
    try:
        offset, size = _page(search)
        query = search.get("query") or {"match_all": {}}
        found = [doc for doc in docs if matches(doc, query)]
    except (QueryError, TypeError, ValueError):
        return []
    return found[offset : offset + size]


def query_answer(body: dict[str, Any], docs: Iterable[dict[str, Any]]) -> Answer:
    """``POST .../assets/metadata/query``: a list of hit lists, one per DDO index with hits.

    :param body: the request body (``{}`` when none).
    :param docs: every indexed DDO.
    """
    try:
        search = build_search(body)
    except TypeError:
        return 500, INTERNAL_ERROR
    indexes: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        indexes.setdefault(f"op_ddo_v{doc.get('version')}", []).append(doc)
    results = [_index_hits(indexes[name], search) for name in sorted(indexes)]
    return 200, [hits for hits in results if hits]


# -- POST ddo/validate ----------------------------------------------------------------------------------
def _js_numbers(value: Any) -> Any:
    """Numbers as ``JSON.stringify`` writes them: integral floats without ``.0``, NaN/Infinity as null."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def js_stringify(value: Any) -> str:
    """``JSON.stringify(value)``: compact, keys in their order, non-ASCII text unescaped."""
    import json

    return json.dumps(_js_numbers(value), separators=(",", ":"), ensure_ascii=False)


def validation_signature(ddo: Any, key: str) -> dict[str, Any]:
    """``OceanNode.getValidationSignature(JSON.stringify(ddo))`` with the node's key.

    :param ddo: the DDO as received.
    :param key: the node's private key.
    """
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak

    hashed = "0x" + hashlib.sha256(js_stringify(ddo).encode()).hexdigest()
    message = keccak(text=hashed).lstrip(b"\x00")  # ethers.toBeArray: minimal big-endian bytes
    signed = Account.sign_message(encode_defunct(primitive=message), key)
    return {
        "hash": hashed,
        "publicKey": Account.from_key(key).address,
        "r": "0x" + signed.r.to_bytes(32, "big").hex(),
        "s": "0x" + signed.s.to_bytes(32, "big").hex(),
        "v": signed.v if signed.v > 1 else signed.v + 27,
    }


def _request_errors(ddo: Any) -> Answer | None:
    """``ValidateDDOHandler.validate`` then its version check (before any credential check)."""
    if ddo is None:
        return 400, (
            f'Missing one ( "ddo" ) or more required field(s) for command: "{VALIDATE_COMMAND}". '
            "Required fields: ddo"
        )
    identifier = ddo.get("id") if isinstance(ddo, dict) else None
    if _truthy(identifier) and not isinstance(identifier, str):
        return 500, INTERNAL_ERROR  # identifier.startsWith is not a function: thrown out of the handler
    if not _truthy(identifier) or not str(identifier).startswith("did:op"):
        return 400, ' Missing or invalid required parameter "id'
    if not _truthy(ddo.get("version")):
        return 400, "Missing DDO version"
    return None


def _shacl_errors(ddo: dict[str, Any]) -> Answer | None:
    """``DDOManager.getDDOClass(ddo).validate()`` as the handler frames its outcome."""
    version = ddo["version"]
    if not isinstance(version, str):
        return 500, "Unknown error: version.startsWith is not a function"
    if not version.startswith(("4", "5")):
        return 500, f"Unknown error: Unsupported DDO version: {version}"
    if version not in DDO_JS_V4_SCHEMAS:
        return 500, f"Unknown error: no SHACL schema for DDO version {version}"
    errors = validate_ddo(ddo)
    errors.pop("@context", None)  # ddo.js sets its own @context before validating
    if errors:
        return 400, "Validation error: [object Object]"
    return None


def validate_answer(body: dict[str, Any], key: str, authenticate: Authenticate) -> Answer:
    """``POST .../assets/ddo/validate``.

    :param body: the JSON request body (``{}`` when none).
    :param key: the node's private key (signs valid DDOs).
    :param authenticate: checks ``publisherAddress``/``nonce``/``signature`` or the token, when sent.
    """
    ddo = body.get("ddo") if _truthy(body.get("ddo")) else None
    problem = _request_errors(ddo)
    if problem is not None:
        return problem
    sent = {
        name: body.get(name) if _truthy(body.get(name)) else None for name in ("publisherAddress", "nonce")
    }
    sent["signature"] = body.get("signature") if _truthy(body.get("signature")) else None
    refused = authenticate(sent)
    if refused is not None:
        return refused
    problem = _shacl_errors(ddo)
    if problem is not None:
        return problem
    return 200, validation_signature(ddo, key)  # validateUnsignedDDO defaults to true: always signed


__all__ = [
    "DDO_PATH",
    "METADATA_QUERY_PATH",
    "VALIDATE_PATH",
    "Answer",
    "build_search",
    "ddo_answer",
    "js_stringify",
    "query_answer",
    "validate_answer",
    "validation_signature",
]
