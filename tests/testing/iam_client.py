"""ibm-cloud-sdk-core's IAMAuthenticator against an IAM endpoint; run in its own venv.

Usage: ``python iam_client.py IAM_URL APIKEY BAD_APIKEY``. Prints JSON: the bearer header it
adds, whether a second call reused the cached token, and the error for a refused key.
"""

from __future__ import annotations

import json
import sys

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator


def main(url: str, apikey: str, bad_apikey: str) -> dict[str, object]:
    authenticator = IAMAuthenticator(apikey, url=url)
    first: dict[str, dict[str, str]] = {"headers": {}}
    second: dict[str, dict[str, str]] = {"headers": {}}
    authenticator.authenticate(first)
    authenticator.authenticate(second)
    refused: dict[str, object] = {}
    try:
        IAMAuthenticator(bad_apikey, url=url).authenticate({"headers": {}})
    except ApiException as exc:
        refused = {"code": exc.code, "message": exc.message}
    return {
        "authorization": first["headers"]["Authorization"],
        "cached": first["headers"] == second["headers"],
        "refused": refused,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
