"""Auto-response rules through the REST API and the CLI of a running mailcase."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.platform import Platform


def test_rules_crud_over_the_api(platform: Platform) -> None:
    with platform.api() as api:
        assert (
            api.get("/api/v1/auto-response-rules", headers={"Authorization": ""}).status_code == 401
        )
        res = api.post(
            "/api/v1/auto-response-rules",
            json={
                "name": "api-ack",
                "text_template": "Case {{ case_number }}",
                "sender_domain": "@VIP.test",
            },
        )
        assert res.status_code == 201, res.text
        rule = res.json()
        assert rule["sender_domain"] == "vip.test" and rule["enabled"] is True
        assert (
            api.post(
                "/api/v1/auto-response-rules", json={"name": "api-ack", "text_template": "x"}
            ).status_code
            == 409
        )
        for template in ("{{ ''.__class__ }}", "{{ no_such_variable }}", "{% if %}"):
            bad = api.post(
                "/api/v1/auto-response-rules", json={"name": "bad", "text_template": template}
            )
            assert bad.status_code == 422, (template, bad.text)
        by_id = api.get(f"/api/v1/auto-response-rules/{rule['id']}").json()
        assert by_id == api.get("/api/v1/auto-response-rules/api-ack").json() == rule
        patched = api.patch(
            "/api/v1/auto-response-rules/api-ack",
            json={"position": 1, "enabled": False, "html_template": "<p>{{ subject }}</p>"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["position"] == 1 and patched.json()["enabled"] is False
        assert patched.json()["html_template"] == "<p>{{ subject }}</p>"
        assert (
            api.patch(
                "/api/v1/auto-response-rules/api-ack",
                json={"subject_template": "{{ ''.__class__ }}"},
            ).status_code
            == 422
        )
        assert (
            api.patch("/api/v1/auto-response-rules/nope", json={"position": 1}).status_code == 404
        )
        assert api.delete("/api/v1/auto-response-rules/api-ack").status_code == 204
        assert api.delete("/api/v1/auto-response-rules/api-ack").status_code == 404
        assert api.get("/api/v1/auto-response-rules/api-ack").status_code == 404
        spec = api.get("/openapi.json").json()
        assert "/api/v1/auto-response-rules/{rule}" in spec["paths"]


def test_rules_from_the_cli(platform: Platform, tmp_path: Path) -> None:
    body = tmp_path / "ack.txt"
    body.write_text("Hello {{ contact_name }},\nyour case is {{ case_number }}.\n")
    out = platform.cli(
        "autoresponse",
        "add",
        "cli-ack",
        "--template-file",
        str(body),
        "--routing-address",
        "support@example.test",
        "--subject-contains",
        "invoice",
    ).stdout
    assert "added rule cli-ack" in out
    bad = platform.cli(
        "autoresponse", "add", "cli-bad", "--body", "{{ ''.__class__ }}", check=False
    )
    assert bad.returncode != 0 and "sandbox" in bad.stderr
    listed = json.loads(platform.cli("autoresponse", "list", "--json").stdout)
    (rule,) = [r for r in listed if r["name"] == "cli-ack"]
    assert rule["routing_address"] == "support@example.test"
    assert rule["text_template"] == body.read_text()
    shown = platform.cli("autoresponse", "show", "cli-ack").stdout
    assert "subject_contains: invoice" in shown and "{{ case_number }}" in shown
    platform.cli("autoresponse", "update", "cli-ack", "--disable", "--subject-contains", "")
    listed = json.loads(platform.cli("autoresponse", "list", "--json").stdout)
    (rule,) = [r for r in listed if r["name"] == "cli-ack"]
    assert rule["enabled"] is False and rule["subject_contains"] is None
    # The API sees what the CLI wrote.
    with platform.api() as api:
        assert api.get("/api/v1/auto-response-rules/cli-ack").json()["enabled"] is False
    platform.cli("routing", "add", "support@example.test")  # notify: a routing address's
    platform.cli("autoresponse", "notify", "support@example.test", "on")
    assert "support@example.test  True" in platform.cli("autoresponse", "notify").stdout
    # Issue 12.7: an address that is no routing address is refused, with what to do.
    bad = platform.cli("autoresponse", "notify", "nobody@example.test", "on", check=False)
    assert bad.returncode == 1 and "nobody@example.test is not a routing address" in bad.stderr
    assert "nobody" not in platform.cli("autoresponse", "notify").stdout
    platform.cli("autoresponse", "remove", "cli-ack")
    assert platform.cli("autoresponse", "remove", "cli-ack", check=False).returncode != 0
