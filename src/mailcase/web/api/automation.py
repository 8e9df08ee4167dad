"""REST routes of auto-response rules: CRUD under /api/v1/auto-response-rules.

Templates are checked in the sandbox before a rule is saved: a template that does not render
with sample values, or that tries to leave the sandbox, is a 422 with the reason.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from mailcase.features.cases.automation import service as automation
from mailcase.features.cases.automation.autoresponse import TEMPLATE_VARIABLES, Rule
from mailcase.web.api import ApiContext

__all__ = ["router"]

_VARS = ", ".join(TEMPLATE_VARIABLES)


class RuleIn(BaseModel):
    """A new auto-response rule entry."""

    name: str = Field(min_length=1, max_length=200, description="Unique name.")
    position: int | None = Field(None, description="Order, lower first; default: last.")
    enabled: bool = Field(True, description="Switched on.")
    routing_address: str | None = Field(None, description="Criterion: the routing address.")
    sender_domain: str | None = Field(None, description="Criterion: sender's domain (or below).")
    subject_contains: str | None = Field(None, description="Criterion: text in the subject.")
    from_name: str = Field("", description="Display name of the acknowledgement's From.")
    subject_template: str = Field(
        "Case {{ case_number }}: {{ subject }}",
        description=f"Jinja2 subject template (the thread token is added). Variables: {_VARS}.",
    )
    text_template: str = Field(description=f"Jinja2 plain-text body template. Variables: {_VARS}.")
    html_template: str | None = Field(None, description="Jinja2 HTML body template (autoescaped).")


class RulePatch(BaseModel):
    """Fields to change; absent fields stay as they are."""

    name: str | None = Field(None, min_length=1, max_length=200)
    position: int | None = None
    enabled: bool | None = None
    routing_address: str | None = None
    sender_domain: str | None = None
    subject_contains: str | None = None
    from_name: str | None = None
    subject_template: str | None = None
    text_template: str | None = None
    html_template: str | None = None


class RuleOut(BaseModel):
    """An auto-response rule entry."""

    id: int
    name: str
    position: int
    enabled: bool
    routing_address: str | None
    sender_domain: str | None
    subject_contains: str | None
    from_name: str
    subject_template: str
    text_template: str
    html_template: str | None


def _out(rule: Rule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        name=rule.name,
        position=rule.position,
        enabled=rule.enabled,
        routing_address=rule.routing_address,
        sender_domain=rule.sender_domain,
        subject_contains=rule.subject_contains,
        from_name=rule.from_name,
        subject_template=rule.subject_template,
        text_template=rule.text_template,
        html_template=rule.html_template,
    )


def _status(e: automation.RuleError) -> HTTPException:
    return HTTPException(409 if "already exists" in str(e) else 422, str(e))


def router(ctx: ApiContext) -> APIRouter:
    """The routes, each behind `ctx.auth`."""
    r = APIRouter(dependencies=ctx.auth, tags=["auto-responses"])

    @r.get("/api/v1/auto-response-rules")
    async def list_rules() -> list[RuleOut]:
        """All rules in the order they are tried (first match wins)."""
        return [_out(x) for x in await ctx.db(automation.list_rules)]

    @r.post("/api/v1/auto-response-rules", status_code=201)
    async def create_rule(body: RuleIn) -> RuleOut:
        """Add a rule; 422 when a template fails the sandbox check, 409 for a taken name."""
        try:
            rule = await ctx.db(automation.add_rule, **body.model_dump())
        except automation.RuleError as e:
            raise _status(e) from None
        return _out(rule)

    @r.get("/api/v1/auto-response-rules/{rule}")
    async def get_rule(rule: str) -> RuleOut:
        """One rule by id or name."""
        found = await ctx.db(automation.get_rule, rule)
        if found is None:
            raise HTTPException(404, f"no auto-response rule {rule!r}")
        return _out(found)

    @r.patch("/api/v1/auto-response-rules/{rule}")
    async def update_rule(rule: str, body: RulePatch) -> RuleOut:
        """Change a rule; templates are checked again."""
        changes: dict[str, Any] = body.model_dump(exclude_unset=True)
        try:
            found = await ctx.db(automation.update_rule, rule, **changes)
        except automation.RuleError as e:
            raise _status(e) from None
        if found is None:
            raise HTTPException(404, f"no auto-response rule {rule!r}")
        return _out(found)

    @r.delete("/api/v1/auto-response-rules/{rule}", status_code=204)
    async def delete_rule(rule: str) -> Response:
        """Delete a rule."""
        if not await ctx.db(automation.remove_rule, rule):
            raise HTTPException(404, f"no auto-response rule {rule!r}")
        return Response(status_code=204)

    return r
