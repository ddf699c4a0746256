"""Admin routes of the webhook queue: ``GET /webhooks/deliveries`` and ``POST /webhooks/deliveries/{id}/retry``
(dead letters, and deliveries ``dropped`` because their target was removed).

Admins only: a delivery's target and error say where a town's case system lives.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from pipeline.tickets.api_contract import OffsetQuery
from pipeline.tickets.auth import AdminUser
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.schemas import ErrorOut
from pipeline.tickets.users import audit
from pipeline.tickets.webhooks import DEAD, DROPPED, WebhookDelivery, requeue


class WebhookDeliveryOut(BaseModel):
    """One queued webhook delivery (the body is not shown; its ``delivery_id`` identifies it at the receiver)."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Row id (for the retry route).")
    delivery_id: str = Field(description="`delivery_id` of the body and the `X-Gridwatch-Delivery` header.")
    target: str = Field(description="Target name from `api.webhooks.targets`.")
    event: str = Field(description="ticket_created, ticket_overdue, ticket_escalated or ticket_closed.")
    ticket_id: int = Field(description="The ticket.")
    status: Literal["pending", "delivered", "dead", "dropped"] = Field(
        description="dead: every attempt failed; dropped: never to be sent (see `dropped_reason`).")
    attempts: int = Field(description="Attempts made.")
    next_attempt_at: datetime = Field(description="When a pending delivery is tried next (UTC).")
    last_status: int | None = Field(description="HTTP status of the last attempt; null when it got none.")
    last_error: str | None = Field(description="Why the last attempt failed; null when it did not.")
    created_at: datetime = Field(description="When the event was queued (UTC).")
    finished_at: datetime | None = Field(description="When it was delivered, dead-lettered or dropped (UTC).")
    dropped_reason: Literal["target_removed"] | None = Field(
        default=None, description="Why it was dropped: `target_removed`, its target is no longer in "
        "`api.webhooks.targets` (null unless dropped).")


class WebhookPage(BaseModel):
    """A page of deliveries, newest first."""

    items: list[WebhookDeliveryOut]
    total: int = Field(description="Deliveries matching the filters.")


RowIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Row id of the delivery.")]


def install_webhook_routes(app: FastAPI) -> None:
    """Add the webhook admin routes to ``app`` (its ``state.tickets`` holds the session factory)."""

    @app.get("/webhooks/deliveries", response_model=WebhookPage, tags=["ops"], responses=AUTH_ERRORS)
    def list_deliveries(
        request: Request, user: AdminUser,
        status: Annotated[Literal["pending", "delivered", "dead", "dropped"] | None,
                          Query(description="Only this status; `dead` lists the dead letters, `dropped` what "
                                "will never be sent (a removed target).")] = None,
        target: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$",
                                            description="Only this target.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
        offset: OffsetQuery = 0,
    ) -> WebhookPage:
        """Webhook deliveries, newest first (admin)."""
        q = select(WebhookDelivery)
        if status is not None:
            q = q.where(WebhookDelivery.status == status)
        if target is not None:
            q = q.where(WebhookDelivery.target == target)
        with request.app.state.tickets.sessions() as session:
            total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = session.scalars(q.order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset)).all()
            return WebhookPage(items=[WebhookDeliveryOut.model_validate(r) for r in rows], total=total)

    @app.post("/webhooks/deliveries/{row_id}/retry", response_model=WebhookDeliveryOut, tags=["ops"],
              responses={404: {"model": ErrorOut, "description": "No such delivery."},
                         409: {"model": ErrorOut, "description": "The delivery is neither dead nor dropped, or "
                               "its target is not configured (any more)."}, **AUTH_ERRORS})
    def retry_delivery(request: Request, user: AdminUser, row_id: RowIdPath) -> WebhookDeliveryOut:
        """Put a dead (or dropped, once its target is configured again) delivery back into the queue with a
        fresh attempt count (admin; 409 otherwise)."""
        st = request.app.state.tickets
        with st.sessions() as session, session.begin():
            row = session.get(WebhookDelivery, row_id)
            if row is None:
                raise HTTPException(404, f"webhook delivery {row_id} not found")
            if row.status not in (DEAD, DROPPED):
                raise HTTPException(409, f"webhook delivery {row_id} is {row.status}, only dead or dropped ones "
                                    "are retried")
            if row.target not in {t.name for t in st.site.api.webhooks.targets}:
                raise HTTPException(409, f"webhook target {row.target!r} is not configured; add it to "
                                    "api.webhooks.targets first")
            row = requeue(session, row_id)
            audit(session, user.username, "webhook.retry", f"webhook_delivery:{row_id}",
                  st.auth.client_address(request), webhook_target=row.target if row else None)
            return WebhookDeliveryOut.model_validate(row)
