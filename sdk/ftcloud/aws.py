"""AWS sessions and clients with ftcloud's retry policy and error translation.

One :class:`AwsContext` per command: it honours ``--profile`` / ``--region`` and builds
every client with adaptive retries. boto3 is imported on first use only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ftcloud import __version__
from ftcloud.adaptors import boto3, botocore_config
from ftcloud.errors import RETRY_CONFIG, translate_aws_error

T = TypeVar("T")


class AwsContext:
    """A lazily created boto3 session plus cached clients."""

    def __init__(self, profile: str | None = None, region: str | None = None):
        self.profile = profile
        self._region = region
        self._session: Any = None
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> Any:
        if self._session is None:
            try:
                self._session = boto3.Session(profile_name=self.profile, region_name=self._region)
            except Exception as exc:  # ProfileNotFound and friends
                raise translate_aws_error(exc, profile=self.profile, region=self._region) from None
        return self._session

    @property
    def region(self) -> str | None:
        return self._region or self.session.region_name

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = botocore_config.Config(retries=dict(RETRY_CONFIG), user_agent_extra=f"ftcloud/{__version__}")
            try:
                self._clients[service] = self.session.client(service, config=config)
            except Exception as exc:  # NoRegionError
                raise translate_aws_error(exc, profile=self.profile, region=self._region) from None
        return self._clients[service]

    def call(self, fn: Callable[..., T], /, *args: Any, error_context: dict | None = None, **kwargs: Any) -> T:
        """Call a client method; botocore errors become actionable :class:`FtcloudError` s."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            from ftcloud.adaptors import botocore_exceptions

            boto3_error = getattr(boto3.exceptions, "Boto3Error", ())  # S3UploadFailedError & co
            if not isinstance(exc, botocore_exceptions.BotoCoreError | botocore_exceptions.ClientError | boto3_error):
                raise
            operation = getattr(exc, "operation_name", None) or _operation_name(fn)
            raise self.translate(exc, operation=operation, **(error_context or {})) from None

    def translate(self, exc: BaseException, operation: str | None = None, **context: Any) -> Exception:
        """The user-facing error for a botocore exception raised by one of this context's clients."""
        return translate_aws_error(exc, operation=operation, profile=self.profile, region=self._region, **context)

    def describe(self) -> str:
        parts = []
        if self.profile:
            parts.append(f"profile {self.profile}")
        region = self._region or (self._session.region_name if self._session is not None else None)
        if region:
            parts.append(region)
        return ", ".join(parts)


def _operation_name(fn: Callable) -> str:
    name = getattr(fn, "__name__", "")
    return "".join(part.capitalize() for part in name.split("_")) or "AWS call"
