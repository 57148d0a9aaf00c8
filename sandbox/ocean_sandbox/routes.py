"""The routes both sandbox personalities serve besides their API: DDOs (Aquarius-compatible) and the
sample files the DDOs point at."""

from __future__ import annotations

import re

VALIDATE_PATH = "/api/aquarius/assets/ddo/validate"
QUERY_PATH = "/api/aquarius/assets/query"
DDO_ROUTE = re.compile(r"^/api/aquarius/assets/ddo/(?P<did>[^/]+)$")
FILE_ROUTE = re.compile(r"^/sandbox/files/(?P<name>[A-Za-z0-9._-]+)$")
