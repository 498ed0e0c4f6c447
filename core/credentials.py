"""Cloud credentials for Ray workers, passed by value and never through a ``runtime_env``.

Ray writes every ``runtime_env`` it sets up to its agents' logs at INFO, on every node, so a key
forwarded as an ``env_vars`` entry ends up in ``runtime_env_agent.log``. The jobs instead capture
the allowlisted variables in the driver (:func:`capture`), hand them to their actors and train
workers as a constructor or loop-config value, and :func:`install` them there before anything
touches storage. One allowlist for generate, eval and training; temporary credentials
(``AWS_SESSION_TOKEN``) and the region travel with the keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                  "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")


@dataclass(frozen=True)
class Credentials:
    values: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print a value, whoever logs this object
        return f"Credentials({', '.join(sorted(self.values)) or 'none'}; values hidden)"

    __str__ = __repr__


def capture() -> Credentials:
    """The allowlisted variables set in this process."""
    return Credentials({k: os.environ[k] for k in CREDENTIAL_ENV if os.environ.get(k)})


def install(creds: Credentials | None) -> None:
    """Set them in this (worker) process; the driver's values win over a node's own."""
    if creds is not None:
        os.environ.update(creds.values)
