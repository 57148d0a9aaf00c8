"""The Aquarius routes clients use besides ``GET .../ddo/{did}``: ``POST .../ddo/validate`` and the
Elasticsearch subset of ``POST .../query`` that ocean.py and ocean.js send to wait for and find an asset.

Facts from oceanprotocol/aquarius (``aquarius/app/assets.py`` ``validate_remote``/``query_ddo``,
``aquarius/app/util.py`` ``get_signature_vrs``, ``aquarius/ddo_checker/shacl_checker.py`` ``validate_dict``
and ``shacl_schemas/v4/remote_4.*.ttl``, ``aquarius/app/es_instance.py``):

* validate takes the DDO as the raw body with ``Content-Type: application/octet-stream``; a valid DDO gets
  200 ``{"hash": "0x" + sha256(body), "publicKey", "v", "r": [hex], "s": [hex]}`` (``r`` and ``s`` are
  one-element lists: Aquarius builds them as tuples); an invalid one 400 ``{"errors": {field: message}}``
  keyed by the last segment of the failing path;
* query runs the body as an Elasticsearch search on the index ``oceandb`` (``_id`` = the DID) and answers
  Elasticsearch's search answer; ocean.py reads ``hits.hits[]._source``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocean_sandbox.crypto import did_for

if TYPE_CHECKING:
    from collections.abc import Iterable

ES_INDEX = "oceandb"
ALLOWED_VERSIONS = ("4.0.0", "4.1.0", "4.3.0", "4.5.0")
BAD_CONTENT_TYPE = "Invalid request content type: should be application/octet-stream"
NOT_A_DICT = "Invalid payload. The request could not be converted into a dict."
DEFAULT_SIZE = 10  # Elasticsearch's default page size

# (field, xsd type, required) per SHACL shape of remote_4.x.ttl; "node" = a nested shape
_DDO_SHAPE = (("id", "string", True), ("version", "string", True), ("chainId", "integer", True))
_DDO_SHAPE += (("nftAddress", "string", True),)
_METADATA_SHAPE = (
    ("description", "string", True),
    ("name", "string", True),
    ("type", "string", True),
    ("author", "string", True),
    ("license", "string", True),
    ("copyrightHolder", "string", False),
    ("contentLanguage", "string", False),
)
_CONTAINER_SHAPE = tuple((name, "string", True) for name in ("entrypoint", "image", "tag", "checksum"))
_SERVICE_SHAPE = (
    ("id", "string", True),
    ("type", "string", True),
    ("datatokenAddress", "string", True),
    ("serviceEndpoint", "string", True),
    ("files", "string", True),
    ("timeout", "integer", True),
    ("name", "string", False),
    ("description", "string", False),
)
_COMPUTE_SHAPE = (("allowRawAlgorithm", "boolean", True), ("allowNetworkAccess", "boolean", True))
_TRUSTED_SHAPE = tuple((n, "string", True) for n in ("did", "filesChecksum", "containerSectionChecksum"))


class QueryError(ValueError):
    """A query the sandbox's Elasticsearch subset cannot run (Elasticsearch: a ``parsing_exception``)."""


# -- validate -----------------------------------------------------------------------------------------
def _type_ok(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str)


def _check_shape(node: Any, shape: tuple[tuple[str, str, bool], ...], errors: dict[str, str]) -> None:
    if not isinstance(node, dict):
        return
    for name, kind, required in shape:
        value = node.get(name)
        if value is None or value == []:
            if required:
                errors[name] = f"Less than 1 value on schema:{name}"
            continue
        for item in value if isinstance(value, list) else [value]:
            if not _type_ok(item, kind):
                errors[name] = f"Value is not Literal with datatype xsd:{kind}"


def _is_iso(text: Any) -> bool:
    try:
        datetime.fromisoformat(str(text).rstrip("Z"))
    except ValueError:
        return False
    return True


def validate_ddo(ddo: dict[str, Any]) -> dict[str, str]:
    """The errors Aquarius's ``validate_dict`` finds in a v4 DDO (empty when valid), as a subset of its
    SHACL shapes plus its extra checks (context, metadata dates, chainId, nftAddress, DID rule).

    :param ddo: the DDO as published (without Aquarius's own fields).
    :return: ``{field: message}``.
    """
    errors: dict[str, str] = {}
    _check_shape(ddo, _DDO_SHAPE, errors)
    metadata = ddo.get("metadata")
    if isinstance(metadata, dict):
        _check_shape(metadata, _METADATA_SHAPE, errors)
        algorithm = metadata.get("algorithm")
        if isinstance(algorithm, dict):
            if not isinstance(algorithm.get("container"), dict):
                errors["container"] = "Less than 1 value on schema:container"
            _check_shape(algorithm.get("container"), _CONTAINER_SHAPE, errors)
    services = ddo.get("services")
    if not isinstance(services, list) or not services:
        errors["services"] = "Less than 1 value on schema:services"
    for service in services if isinstance(services, list) else []:
        _check_shape(service, _SERVICE_SHAPE, errors)
        compute = service.get("compute") if isinstance(service, dict) else None
        if isinstance(compute, dict):
            _check_shape(compute, _COMPUTE_SHAPE, errors)
            for trusted in compute.get("publisherTrustedAlgorithms") or []:
                _check_shape(trusted, _TRUSTED_SHAPE, errors)
    if not isinstance(ddo.get("@context"), list | dict):
        errors["@context"] = "Context is missing or invalid."
    if not isinstance(metadata, dict):
        errors["metadata"] = "Metadata is missing or invalid."
    else:
        for attr in ("created", "updated"):
            if attr in metadata and not _is_iso(metadata[attr]):
                errors["metadata"] = attr + " is not in iso format."
    chain_id = ddo.get("chainId")
    nft = ddo.get("nftAddress")
    if not chain_id:
        errors["chainId"] = "chainId is missing or invalid."
    if not isinstance(nft, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", nft):
        errors["nftAddress"] = "nftAddress is missing or invalid."
    elif did_for(nft, chain_id) != ddo.get("id"):
        errors["id"] = "did is not valid for chain Id and nft address"
    return errors


def signature_values(raw: bytes, key: str) -> dict[str, Any]:
    """``get_signature_vrs``: the sha256 of the body, signed (EIP-191) by the Aquarius wallet."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    digest = hashlib.sha256(raw).digest()
    signed = Account.sign_message(encode_defunct(primitive=digest), key)
    return {
        "hash": "0x" + digest.hex(),
        "publicKey": Account.from_key(key).address,
        "v": signed.v if signed.v > 1 else signed.v + 27,
        "r": ["0x" + signed.r.to_bytes(32, "big").hex()],
        "s": ["0x" + signed.s.to_bytes(32, "big").hex()],
    }


def validate_route(raw: bytes, content_type: str | None, key: str) -> tuple[int, Any]:
    """``POST /api/aquarius/assets/ddo/validate``: (status, JSON body) as Aquarius answers.

    :param raw: the request body.
    :param content_type: the request's ``Content-Type`` (parameters ignored, as Flask's ``content_type``
        compares the whole header: ocean.py sends the bare type).
    :param key: the private key Aquarius signs valid DDOs with.
    """
    if (content_type or "").strip() != "application/octet-stream":
        return 400, [{"message": BAD_CONTENT_TYPE}]
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return 400, {"error": NOT_A_DICT}
    if not isinstance(data, dict):
        problem = f"'{type(data).__name__}' object has no attribute 'get'"
        return 500, {"error": f"Encountered error when validating asset: {problem}."}
    version = data.get("version")
    if not version:
        return 400, [{"message": "no version provided for DDO."}]
    if version not in ALLOWED_VERSIONS:
        return 500, {"error": f"Encountered error when validating asset: Can't find schema {version}."}
    errors = validate_ddo(data)
    if errors:
        return 400, {"errors": errors}
    return 200, signature_values(raw, key)


# -- query --------------------------------------------------------------------------------------------
def _values(doc: dict[str, Any], field: str) -> list[Any]:
    """All values at a dotted path (lists flattened, as Elasticsearch indexes arrays); ``_id`` = the DID."""
    if field == "_id":
        return [doc.get("id")]
    current: list[Any] = [doc]
    for part in field.split("."):
        found: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                found.extend(value if isinstance(value, list) else [value])
        current = found
    return [v for v in current if v is not None]


def _leaf_strings(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaf_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaf_strings(value)
    elif node is not None and not isinstance(node, bool):
        yield str(node)


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^0-9a-zA-Z_]+", text.lower()) if t} | {text.lower()}


def _equals(value: Any, wanted: Any) -> bool:
    if isinstance(value, str) and isinstance(wanted, str):
        return value.lower() == wanted.lower()
    return bool(value == wanted)


def _text_matches(text: str, wanted: str) -> bool:
    wanted = wanted.lower()
    if any(c in wanted for c in "*?"):
        return fnmatch.fnmatchcase(text.lower(), wanted) or any(
            fnmatch.fnmatchcase(t, wanted) for t in _tokens(text)
        )
    return wanted == text.lower() or wanted in _tokens(text)


def _field_and_value(spec: Any, what: str) -> tuple[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise QueryError(f"[{what}] query malformed, no start_object after query name")
    ((field, value),) = spec.items()
    if isinstance(value, dict):
        value = value.get("value", value.get("query"))
    return field, value


_QS_TERM = re.compile(r'(?:(?P<field>(?:[^\s:\\"]|\\.)+):)?(?P<value>"[^"]*"|(?:[^\s\\]|\\.)+)')


def _query_string(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    """``query_string``: whitespace-separated ``[field:]value`` terms (``\\:`` escapes a colon, ``*``/``?``
    wildcards, ``AND``/``OR``/``NOT``; the default operator is OR), over ``fields`` or the whole document."""
    text = str(spec.get("query", ""))
    operator = str(spec.get("default_operator", "OR")).upper()
    fields = spec.get("fields") or []
    results: list[bool] = []
    joins: list[str] = []
    negate = False
    for match in _QS_TERM.finditer(text):
        token = match.group(0)
        if token in ("AND", "OR", "&&", "||"):
            joins[-1:] = ["AND" if token in ("AND", "&&") else "OR"]
            continue
        if token in ("NOT", "!"):
            negate = True
            continue
        value = match.group("value").replace("\\", "").strip('"')
        field = (match.group("field") or "").replace("\\", "")
        if field:
            strings = [str(v) for v in _values(doc, field)]
        elif fields:
            strings = [s for f in fields for s in _leaf_strings(_values(doc, str(f).split("^")[0]))]
        else:
            strings = list(_leaf_strings(doc))
        found = any(_text_matches(s, value) for s in strings)
        results.append(found != negate)
        joins.append(operator)
        negate = False
    if not results:
        return True
    outcome = results[0]
    for join, result in zip(joins, results[1:], strict=False):
        outcome = (outcome and result) if join == "AND" else (outcome or result)
    return outcome


def matches(doc: dict[str, Any], query: Any) -> bool:
    """Whether ``doc`` matches an Elasticsearch query of the supported subset: ``match_all``, ``ids``,
    ``term``, ``terms``, ``match``, ``match_phrase``, ``exists``, ``query_string``, ``bool``."""
    if not isinstance(query, dict) or len(query) != 1:
        raise QueryError("query malformed, must start with start_object")
    ((kind, spec),) = query.items()
    if kind == "match_all":
        return True
    if kind == "ids":
        return doc.get("id") in (spec or {}).get("values", [])
    if kind == "term":
        field, wanted = _field_and_value(spec, kind)
        return any(_equals(v, wanted) for v in _values(doc, field))
    if kind == "terms":
        field, wanted = next(iter(spec.items())) if isinstance(spec, dict) and spec else ("", [])
        return any(_equals(v, w) for v in _values(doc, field) for w in wanted or [])
    if kind in ("match", "match_phrase"):
        field, wanted = _field_and_value(spec, kind)
        if not isinstance(wanted, str):
            return any(_equals(v, wanted) for v in _values(doc, field))
        words = _tokens(wanted) - {wanted.lower()} or {wanted.lower()}
        texts = [str(v) for v in _values(doc, field)]
        hit = any(w in _tokens(t) for t in texts for w in words)
        return hit if kind == "match" else any(wanted.lower() in t.lower() for t in texts)
    if kind == "exists":
        return bool(_values(doc, str((spec or {}).get("field", ""))))
    if kind == "query_string":
        return _query_string(doc, spec if isinstance(spec, dict) else {})
    if kind == "bool":
        return _bool(doc, spec if isinstance(spec, dict) else {})
    raise QueryError(f"unknown query [{kind}]")


def _clauses(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value else []


def _bool(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    required = _clauses(spec.get("must")) + _clauses(spec.get("filter"))
    if not all(matches(doc, q) for q in required):
        return False
    if any(matches(doc, q) for q in _clauses(spec.get("must_not"))):
        return False
    should = _clauses(spec.get("should"))
    minimum = int(spec.get("minimum_should_match", 0 if required else 1 if should else 0))
    return sum(1 for q in should if matches(doc, q)) >= minimum


def search(docs: Iterable[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    """Run a search body (``query``, ``from``, ``size``) over ``docs``; Elasticsearch's answer shape."""
    query = body.get("query") or {"match_all": {}}
    found = [doc for doc in docs if matches(doc, query)]
    start = int(body.get("from", 0) or 0)
    size = int(body.get("size", DEFAULT_SIZE) if body.get("size") is not None else DEFAULT_SIZE)
    page = found[start : start + size]
    return {
        "took": 1,
        "timed_out": False,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": {
            "total": {"value": len(found), "relation": "eq"},
            "max_score": 1.0 if page else None,
            "hits": [
                {"_index": ES_INDEX, "_id": doc.get("id"), "_score": 1.0, "_source": doc} for doc in page
            ],
        },
    }


def query_route(raw: bytes, docs: Iterable[dict[str, Any]]) -> tuple[int, Any]:
    """``POST /api/aquarius/assets/query``: (status, JSON body)."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return 400, {"error": NOT_A_DICT}
    try:
        return 200, search(docs, body)
    except QueryError as exc:
        reason = str(exc)
        return 400, {
            "error": "parsing_exception",
            "info": {"error": {"type": "parsing_exception", "reason": reason}, "status": 400},
        }
    except (TypeError, ValueError) as exc:
        return 500, {"error": f"Encountered Elasticsearch Exception: {exc}"}
