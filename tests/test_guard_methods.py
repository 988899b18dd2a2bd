"""Guards on views that serve several methods: ``methods=`` picks the ones that are checked, and
``charge_when=`` decides from the response whether a quota charge is kept.

The host view is the classic form page: ``GET`` shows the form, a ``POST`` with invalid input
shows it again (200, with the errors) and a valid ``POST`` creates and redirects (302). Only the
redirect did something worth a unit of the quota.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify, redirect, render_template_string, request
from flask.testing import FlaskClient
from werkzeug.wrappers import Response

from flask_profile_billing import (
    ProfileBilling,
    requires_capacity,
    requires_feature,
    requires_quota,
)
from tests.support.host_app import AppFactory, Vacancy, as_user, billing_of, db

FREE_ANALYSES = 20
NEW_NOTE = "/notes/new"
NOTE_FORM = """
<form method="post">
  {% for error in errors %}<p class="error">{{ error }}</p>{% endfor %}
  <input name="title"> <button>Create</button>
</form>
"""


def created(response: Response) -> bool:
    """The host's rule: only the redirect after a valid post created something."""
    return response.status_code == 302


def add_note_form(app: Flask, charge_when: Callable[[Response], bool] = created) -> list[str]:
    """Add the form view to ``app``; the titles of the notes it created."""
    notes: list[str] = []

    @app.route(NEW_NOTE, methods=["GET", "POST"])
    @requires_quota("analysis", methods=["POST"], charge_when=charge_when)
    def new_note() -> Any:
        errors = []
        if request.method == "POST":
            title = request.form.get("title", "").strip()
            if title:
                notes.append(title)
                return redirect("/notes")
            errors.append("A note needs a title")
        return render_template_string(NOTE_FORM, errors=errors)

    return notes


@pytest.fixture
def notes(app: Flask) -> list[str]:
    return add_note_form(app)


def post_note(client: FlaskClient, title: str, **headers: str) -> Any:
    return client.post(NEW_NOTE, data={"title": title}, headers=as_user("alice", **headers))


def test_a_form_page_is_charged_only_for_the_post_that_creates(
    client: FlaskClient, billing: ProfileBilling, notes: list[str]
) -> None:
    pages = [client.get(NEW_NOTE, headers=as_user("alice")) for _ in range(3)]
    invalid = post_note(client, "  ")

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert all("X-Quota-Remaining" not in page.headers for page in pages)  # untouched
    assert invalid.status_code == 200
    assert "A note needs a title" in invalid.get_data(as_text=True)
    assert invalid.headers["X-Quota-Remaining"] == str(FREE_ANALYSES)
    assert billing.allowance("alice", "analysis").used == 0

    valid = post_note(client, "Call the bank")

    assert valid.status_code == 302
    assert valid.headers["X-Quota-Remaining"] == str(FREE_ANALYSES - 1)
    assert billing.allowance("alice", "analysis").used == 1
    assert notes == ["Call the bank"]


def test_without_methods_a_form_views_get_and_head_are_not_charged_its_post_is(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    @app.route("/plain-form", methods=["GET", "POST"])
    @requires_quota("analysis")
    def plain_form() -> Any:
        return jsonify(success=True, method=request.method)

    pages = [client.get("/plain-form", headers=as_user("alice")) for _ in range(3)]
    head = client.head("/plain-form", headers=as_user("alice"))
    posted = client.post("/plain-form", headers=as_user("alice"))

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert all("X-Quota-Remaining" not in page.headers for page in [*pages, head])
    assert posted.headers["X-Quota-Remaining"] == str(FREE_ANALYSES - 1)
    assert billing.allowance("alice", "analysis").used == 1


@pytest.mark.parametrize("unsafe", ["PUT", "PATCH", "DELETE"])
def test_any_unsafe_method_makes_a_view_a_form_view(
    app: Flask, client: FlaskClient, billing: ProfileBilling, unsafe: str
) -> None:
    @app.route("/document", methods=["GET", unsafe])
    @requires_quota("analysis")
    def document() -> Any:
        return jsonify(success=True)

    assert client.get("/document", headers=as_user("alice")).status_code == 200
    assert client.open("/document", method=unsafe, headers=as_user("alice")).status_code == 200

    assert billing.allowance("alice", "analysis").used == 1


def test_a_view_that_only_accepts_get_is_charged_for_every_get(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    @app.get("/report")
    @requires_quota("analysis")
    def report() -> Any:
        return jsonify(success=True)

    for _ in range(3):
        assert client.get("/report", headers=as_user("alice")).status_code == 200

    assert billing.allowance("alice", "analysis").used == 3


def test_methods_listing_get_charges_the_get_of_a_form_view(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    @app.route("/preview", methods=["GET", "POST"])
    @requires_quota("analysis", methods=["GET", "POST"])
    def preview() -> Any:
        return jsonify(success=True)

    client.get("/preview", headers=as_user("alice"))
    client.post("/preview", headers=as_user("alice"))

    assert billing.allowance("alice", "analysis").used == 2


def test_without_methods_the_capacity_guard_leaves_the_form_page_alone(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    @app.route("/vacancies/create", methods=["GET", "POST"])
    @requires_capacity("active_vacancies")
    def create_vacancy() -> Any:
        if request.method == "GET":
            return jsonify(success=True, form="vacancy")
        db.session.add(Vacancy(user_id="alice"))
        db.session.commit()
        return jsonify(success=True), 201

    created_one = client.post("/vacancies/create", headers=as_user("alice"))
    page = client.get("/vacancies/create", headers=as_user("alice"))  # at the cap: still shown
    over_the_cap = client.post("/vacancies/create", headers=as_user("alice"))

    assert [created_one.status_code, page.status_code, over_the_cap.status_code] == [201, 200, 429]
    assert "X-Quota-Remaining" not in page.headers


def test_without_methods_the_feature_guard_still_gates_the_form_page(
    app: Flask, client: FlaskClient
) -> None:
    @app.route("/exports/new", methods=["GET", "POST"])
    @requires_feature("api_access")
    def new_export() -> Any:
        return jsonify(success=True)

    assert client.get("/exports/new", headers=as_user("alice")).status_code == 403


def test_the_form_page_still_opens_when_the_quota_is_used_up(
    client: FlaskClient, billing: ProfileBilling, notes: list[str]
) -> None:
    billing.consume("alice", "analysis", amount=FREE_ANALYSES)

    page = client.get(NEW_NOTE, headers=as_user("alice"))
    refused = post_note(client, "One too many")

    assert page.status_code == 200
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "LIMIT_EXCEEDED"
    assert notes == []


def test_a_response_charge_when_refuses_releases_its_idempotency_key(
    client: FlaskClient, billing: ProfileBilling, notes: list[str]
) -> None:
    first = post_note(client, "", **{"Idempotency-Key": "note-1"})
    repeat = post_note(client, "", **{"Idempotency-Key": "note-1"})

    # Not stored: the repeat ran the view again, and the key is free for the corrected form.
    assert [first.status_code, repeat.status_code] == [200, 200]
    assert "Idempotent-Replayed" not in repeat.headers
    assert billing.allowance("alice", "analysis").used == 0

    valid = post_note(client, "Corrected", **{"Idempotency-Key": "note-1"})
    replayed = post_note(client, "Corrected", **{"Idempotency-Key": "note-1"})

    assert [valid.status_code, replayed.status_code] == [302, 302]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert billing.allowance("alice", "analysis").used == 1
    assert notes == ["Corrected"]


def test_charge_when_decides_also_when_failed_requests_are_charged(make_app: AppFactory) -> None:
    app = make_app(BILLING_CHARGE_FAILED_REQUESTS=True)
    notes = add_note_form(app)
    client = app.test_client()

    assert post_note(client, "").status_code == 200
    assert post_note(client, "Kept").status_code == 302

    with app.app_context():
        billing = billing_of(app)
        assert billing.allowance("alice", "analysis").used == 1
    assert notes == ["Kept"]


def test_a_charge_when_that_raises_gives_the_charge_back(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    def broken_rule(response: Response) -> bool:
        raise RuntimeError("the host's rule failed")

    add_note_form(app, charge_when=broken_rule)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    assert post_note(client, "Lost").status_code == 500
    assert billing.allowance("alice", "analysis").used == 0


def test_methods_on_the_feature_guard(app: Flask, client: FlaskClient) -> None:
    @app.route("/reports", methods=["GET", "POST"])
    @requires_feature("api_access", methods=["POST"])
    def reports() -> Any:
        return jsonify(success=True)

    shown = client.get("/reports", headers=as_user("alice"))  # the Free plan lacks api_access
    refused = client.post("/reports", headers=as_user("alice"))

    assert shown.status_code == 200
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "FEATURE_NOT_AVAILABLE"


def test_methods_on_the_capacity_guard_are_matched_in_any_case(
    app: Flask, client: FlaskClient, billing: ProfileBilling
) -> None:
    @app.route("/vacancies/new", methods=["GET", "POST"])
    @requires_capacity("active_vacancies", methods=["post"])
    def new_vacancy() -> Any:
        if request.method == "GET":
            return jsonify(success=True, form="vacancy")
        db.session.add(Vacancy(user_id="alice"))
        db.session.commit()
        return jsonify(success=True), 201

    created_one = client.post("/vacancies/new", headers=as_user("alice"))
    over_the_cap = client.post("/vacancies/new", headers=as_user("alice"))
    page = client.get("/vacancies/new", headers=as_user("alice"))

    assert [created_one.status_code, over_the_cap.status_code] == [201, 429]  # Free: 1 vacancy
    assert page.status_code == 200
    assert "X-Quota-Remaining" not in page.headers
    assert billing.capacity("alice", "active_vacancies").used == 1


@pytest.mark.parametrize("methods", ["POST", [], [""]], ids=["a string", "empty", "blank"])
def test_guards_refuse_nonsense_methods_at_decoration_time(methods: Any) -> None:
    for guard in (
        lambda: requires_quota("analysis", methods=methods),
        lambda: requires_feature("api_access", methods=methods),
        lambda: requires_capacity("active_vacancies", methods=methods),
    ):
        with pytest.raises(ValueError, match="methods"):
            guard()
