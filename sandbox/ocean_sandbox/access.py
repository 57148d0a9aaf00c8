"""The Provider's non-compute routes the sandbox also serves: auth tokens (usable on every signed
compute call), and the access flow (``fileinfo``, ``initialize``, ``download``, ``decrypt``).

Answers follow Provider v2.1.6 as described in docs/reference/provider-v4-api.md §2.9 / §2.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from ocean_sandbox import validation
from ocean_sandbox.orders import OrderInvalidError
from ocean_sandbox.provider import Response, error_response, validation_error

if TYPE_CHECKING:
    from pathlib import Path

    from ocean_sandbox.provider import ProviderApp

CREATE_TOKEN_RULES = {
    "address": ["bail", "required"],
    "expiration": ["bail", "required", "integer"],
    "nonce": ["bail", "required", "numeric"],
}
DELETE_TOKEN_RULES = {
    "address": ["bail", "required"],
    "token": ["bail", "required"],
    "nonce": ["bail", "required", "numeric"],
}
DOWNLOAD_RULES = {
    "documentId": ["bail", "required"],
    "serviceId": ["required"],
    "consumerAddress": ["bail", "required"],
    "transferTxId": ["bail", "required"],
    "fileIndex": ["required"],
    "nonce": ["bail", "required", "numeric"],
}
INITIALIZE_RULES = {"documentId": ["required"], "serviceId": ["required"], "consumerAddress": ["required"]}
DECRYPT_RULES = {
    "decrypterAddress": ["required"],
    "chainId": ["required"],
    "dataNftAddress": ["required"],
    "nonce": ["required", "numeric"],
}


class AuthTokens:
    """JWT (HS256) auth tokens and their revocation list, kept in the Provider's SQLite file.

    :param path: SQLite database file.
    :param secret_file: where the signing secret is kept (created on first use).
    """

    def __init__(self, path: Path, secret_file: Path) -> None:
        if not secret_file.exists():
            secret_file.write_text(secrets.token_hex(32))
        self._secret = secret_file.read_text().strip()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS revoked_token (token TEXT PRIMARY KEY)")

    def create(self, address: str, expiration: int) -> str:
        import jwt

        return jwt.encode({"exp": int(expiration), "address": address}, self._secret, algorithm="HS256")

    def check(self, token: str) -> tuple[str | None, str | None]:
        """Return (address, None) for a usable token, else (None, reason)."""
        import jwt

        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            return None, "Token is expired."
        except jwt.PyJWTError:
            return None, "Token is invalid."
        with self._lock:
            revoked = self._db.execute("SELECT 1 FROM revoked_token WHERE token = ?", (token,)).fetchone()
        if revoked:
            return None, "Token is deleted."
        return str(claims.get("address")), None

    def revoke(self, token: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO revoked_token VALUES (?)", (token,))


class AccessRoutes:
    """Route logic for auth tokens and the access flow, sharing the compute app's stores and checks.

    :param app: the compute :class:`ProviderApp`.
    :param tokens: the auth token store.
    """

    def __init__(self, app: ProviderApp, tokens: AuthTokens) -> None:
        self.app = app
        self.tokens = tokens

    # -- auth tokens -----------------------------------------------------------------------------------
    def create_auth_token(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, CREATE_TOKEN_RULES)
        if not errors and int(str(data["expiration"])) <= time.time():
            errors = {"expiration": ["Invalid timestamp provided."]}
        if errors:
            return validation_error(errors)
        address = str(data["address"])
        rejected = self.app.check_signature(data, address, "", "", allow_token=False)
        if rejected:
            return rejected
        # createAuthToken does not advance the stored nonce
        return Response(200, {"token": self.tokens.create(address, int(str(data["expiration"])))})

    def delete_auth_token(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, DELETE_TOKEN_RULES)
        if errors:
            return validation_error(errors)
        address = str(data["address"])
        rejected = self.app.check_signature(data, address, "", "", allow_token=False)
        if rejected:
            return rejected
        owner, reason = self.tokens.check(str(data["token"]))
        if owner is None:
            return error_response(reason or "Token is invalid.")
        self.tokens.revoke(str(data["token"]))
        return Response(200, {"success": "Token has been deactivated."})

    # -- access flow -----------------------------------------------------------------------------------
    def _service(self, did: Any, service_id: Any) -> tuple[dict | None, dict | None]:
        ddo = self.app.get_ddo(did)
        if ddo is None:
            return None, None
        service = next((s for s in ddo.get("services", []) if str(s.get("id")) == str(service_id)), None)
        return ddo, service

    def fileinfo(self, body: dict[str, Any]) -> Response:
        if body.get("did"):
            ddo, service = self._service(body.get("did"), body.get("serviceId"))
            if service is None:
                return error_response("Cannot resolve DID or service")
            files = self.app.decrypt_files(ddo, service) or []
        elif body.get("type") == "url" and body.get("url"):
            files = [{"type": "url", "url": body["url"], "method": body.get("method", "GET")}]
        else:
            return validation_error({"type": ["The type field is required when did is not present."]})
        answer = []
        for index, file_object in enumerate(files):
            try:
                content = self.app.fetch_file(file_object)
                info = {"valid": True, "contentLength": str(len(content)), "contentType": "text/plain"}
                if body.get("checksum"):
                    info["checksum"] = hashlib.sha256(content).hexdigest()
            except Exception:
                info = {"valid": False}
            answer.append({**info, "index": index, "type": file_object.get("type")})
        return Response(200, answer)

    def initialize(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, INITIALIZE_RULES)
        if errors:
            return validation_error(errors)
        ddo, service = self._service(data.get("documentId"), data.get("serviceId"))
        if service is None:
            return error_response("Cannot resolve DID or service")
        if service.get("type") != "access":
            return error_response("Use the initializeCompute endpoint to initialize compute jobs.")
        env = {"id": "", "priceMin": 0}
        valid_until = 0 if not service.get("timeout") else int(self.app.now()) + int(service["timeout"])
        fee = self.app.provider_fee(env, service["datatokenAddress"], str(service["id"]), valid_until, 0)
        nonce = self.app.nonces.get_or_init(str(data["consumerAddress"]))
        return Response(200, {"datatoken": service["datatokenAddress"], "nonce": nonce, "providerFee": fee})

    def download(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, DOWNLOAD_RULES)
        if errors:
            return validation_error(errors)
        owner = str(data["consumerAddress"])
        did = str(data["documentId"])
        # download signs documentId + nonce (the job-id slot is empty)
        rejected = self.app.check_signature(data, owner, did, "", message=did)
        if rejected:
            return rejected
        ddo, service = self._service(did, data.get("serviceId"))
        if service is None:
            return error_response("Cannot resolve DID or service")
        try:
            self.app.orders.validate(
                sender=owner, tx_id=str(data["transferTxId"]), ddo=ddo, service=service, now=self.app.now()
            )
        except OrderInvalidError as exc:
            return error_response(f"Order with tx_id {data['transferTxId']} could not be validated: {exc}")
        files = self.app.decrypt_files(ddo, service) or []
        try:
            file_object = files[int(str(data["fileIndex"]))]
        except (IndexError, ValueError):
            return error_response("No file at that fileIndex")
        userdata = data.get("userdata")
        if isinstance(userdata, str):
            try:
                userdata = json.loads(userdata)
            except ValueError:
                userdata = None
        content = self.app.fetch_file(file_object, userdata)
        self.app.nonces.update(owner, data.get("nonce"))
        name = file_object.get("url", "file").rstrip("/").rsplit("/", 1)[-1] or "file"
        return Response(
            200,
            raw=content,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f"attachment;filename={name}",
            },
        )

    def decrypt(self, data: dict[str, Any]) -> Response:
        errors = validation.validate(data, DECRYPT_RULES)
        if errors:
            return validation_error(errors)
        decrypter = str(data["decrypterAddress"])
        first = data.get("transactionId") or data.get("dataNftAddress")
        rejected = self.app.check_signature(
            data, decrypter, "", "", message=f"{first}{decrypter}{data['chainId']}"
        )
        if rejected:
            return rejected
        document = data.get("encryptedDocument")
        if not document:
            return error_response(
                "Decrypt from a transactionId is not supported by the sandbox; send encryptedDocument."
            )
        flags = int(str(data.get("flags", 0)))
        raw = bytes.fromhex(str(document).removeprefix("0x"))
        if flags & 2:
            from ecies import decrypt

            try:
                raw = decrypt(self.app.config.provider_key, raw)
            except Exception:
                return error_response("Failed to decrypt")
        if flags & 1:
            import lzma

            raw = lzma.decompress(raw)
        if (
            data.get("documentHash")
            and "0x" + hashlib.sha256(raw).hexdigest() != str(data["documentHash"]).lower()
        ):
            return error_response("Checksum doesn't match.")
        self.app.nonces.update(decrypter, data.get("nonce"))
        return Response(201, raw=raw, headers={"Content-Type": "text/plain"})
