"""Config of the resident report (一楼一码, ``api.resident`` in the site YAML): the public base URL printed
into the QR codes and the abuse limits of the public report page (``docs/api.md``, Resident report).

Example:
    >>> cfg = ResidentConfig.model_validate({"public_base_url": "https://report.example.org/"})
    >>> cfg.public_base_url, cfg.max_reports_per_address_per_hour, cfg.photo_required
    ('https://report.example.org', 5, False)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ResidentConfig(BaseModel):
    """The QR report page for residents: where it is reached and what it accepts."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Serve the public report page `/r/<token>` (false: every "
                          "code answers 404; admins can still create and print codes).")
    public_base_url: str | None = Field(
        default=None, max_length=500,
        description="Base URL residents' phones reach the service at, printed into each QR code as "
        "`<public_base_url>/r/<token>` (e.g. https://report.example.org); default `api.public_url`, else "
        "the URL the sheet was requested on. Its host must be in `api.allowed_hosts`.")
    max_reports_per_address_per_hour: int = Field(
        default=5, ge=1, le=10_000,
        description="Reports accepted from one client address (the peer, or the trusted proxy's "
        "X-Forwarded-For hop) in any 60 minutes, over all codes; more get 429.")
    max_reports_per_code_per_day: int = Field(
        default=30, ge=1, le=100_000,
        description="Reports accepted through one code in any 24 hours; more get 429 (a code copied onto "
        "a flyer or a script hammering it cannot flood the cell's queue).")
    max_photo_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=50 * 1024 * 1024,
                                 description="Largest photo upload accepted (the page shrinks photos to "
                                 "about 0.3-1 MB before sending); larger: 413.")
    max_photo_pixels: int = Field(default=50_000_000, ge=1_000_000, le=200_000_000,
                                  description="Largest width x height accepted, read from the image header "
                                  "before decoding (a small file that decodes huge is refused).")
    photo_max_side: int = Field(default=1920, ge=320, le=8192,
                                description="The stored photo is re-encoded as JPEG with its long side at most "
                                "this many pixels (EXIF, GPS and anything appended are dropped).")
    photo_required: bool = Field(default=False,
                                 description="Refuse reports without a photo (default: a photo or a description "
                                 "is enough; at night or without camera permission a text report still "
                                 "gets through).")
    max_description_chars: int = Field(default=500, ge=20, le=4000,
                                       description="Longest description accepted; longer: 400.")

    @field_validator("public_base_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("expected an http(s) URL without query or fragment, e.g. https://report.example.org")
        return v.rstrip("/")
