"""Request validation in the manner of flask-sieve, as the Provider configures it.

Rules are checked per attribute in declaration order; a failing rule of an attribute marked ``bail``
stops that attribute's checks, so the ``errors`` object usually holds one field.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """Read ``a.b`` from nested dicts; missing keys give a sentinel."""
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def present(data: dict[str, Any], dotted: str) -> bool:
    value = lookup(data, dotted)
    return value is not _MISSING and value is not None and value != "" and value != [] and value != {}


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(str(value))
    except ValueError:
        return False
    return True


def validate(data: dict[str, Any], rules: dict[str, list[str]]) -> dict[str, list[str]]:
    """Apply ``rules`` ({attribute: [rule, ...]}) and return flask-sieve's ``errors`` object (empty if valid).

    Supported rules: ``bail``, ``required``, ``numeric``, ``integer``, ``required_without:x``,
    ``required_with_all:x,y``.
    """
    errors: dict[str, list[str]] = {}
    for attribute, attr_rules in rules.items():
        bail = "bail" in attr_rules
        value = lookup(data, attribute)
        is_present = present(data, attribute)
        messages: list[str] = []
        for rule in attr_rules:
            name, _, params = rule.partition(":")
            message = None
            if name == "required" and not is_present:
                message = f"The {attribute} field is required."
            elif name == "numeric" and is_present and not _numeric(value):
                message = f"The {attribute} must be a number."
            elif name == "integer" and is_present and not _integer(value):
                message = f"The {attribute} must be an integer."
            elif name == "required_without":
                others = params.split(",")
                if not is_present and any(not present(data, o) for o in others):
                    message = f"The {attribute} field is required when {', '.join(others)} is not present."
            elif name == "required_with_all":
                others = params.split(",")
                if not is_present and all(present(data, o) for o in others):
                    message = f"The {attribute} field is required when {', '.join(others)} are present."
            if message:
                messages.append(message)
                if bail:
                    break
        if messages:
            errors[attribute] = messages
    return errors


NONCE_RULES = {"userAddress": ["required"]}
UNSIGNED_COMPUTE_RULES = {"consumerAddress": ["bail", "required"]}
COMPUTE_RULES = {"consumerAddress": ["bail", "required"], "nonce": ["bail", "required", "numeric"]}
COMPUTE_START_RULES = {
    "dataset.documentId": ["bail", "required"],
    "dataset.serviceId": ["bail", "required"],
    "dataset.transferTxId": ["required"],
    "algorithm.documentId": [
        "required_without:algorithm.meta",
        "required_with_all:algorithm.serviceId,algorithm.transferTxId",
    ],
    "algorithm.meta": ["required_without:algorithm.documentId"],
    "consumerAddress": ["bail", "required"],
    "nonce": ["bail", "required", "numeric"],
}
COMPUTE_RESULT_RULES = {
    "jobId": ["bail", "required"],
    "index": ["bail", "required"],
    "consumerAddress": ["bail", "required"],
    "nonce": ["bail", "required", "numeric"],
}
INITIALIZE_COMPUTE_RULES = {
    "datasets": ["required"],
    "algorithm.documentId": [
        "required_without:algorithm.meta",
        "required_with_all:algorithm.serviceId,algorithm.transferTxId",
    ],
    "algorithm.meta": ["required_without:algorithm.documentId"],
    "compute.env": ["required"],
    "compute.validUntil": ["required", "integer"],
    "consumerAddress": ["required"],
}
