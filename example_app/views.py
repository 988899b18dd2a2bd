"""The home page and the routes the plans limit, one guard each."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import func, select

from flask_profile_billing import Allowance, requires_capacity, requires_feature, requires_quota

from .extensions import billing, db
from .models import Vacancy
from .responses import failed, request_data, succeeded

bp = Blueprint("views", __name__)

TITLE_MAX_LENGTH = 200


def current_user_id() -> str:
    return str(current_user.get_id())


@billing.capacity_loader("active_vacancies")
def count_active_vacancies(user_id: str) -> int:
    # A personal account's loader gets its user's id; a team's, the team's account id
    # ("team:..."). Vacancies here belong to users, so a team has none of its own.
    if not user_id.isdigit():
        return 0
    query = select(func.count()).where(Vacancy.user_id == int(user_id), Vacancy.is_active)
    return db.session.scalar(query) or 0


def usage(allowance: Allowance) -> dict[str, Any]:
    resets_at = allowance.resets_at
    return {
        "limit": allowance.limit,
        "used": allowance.used,
        "remaining": allowance.remaining,
        "resets_at": resets_at.isoformat() if resets_at else None,
    }


@bp.get("/")
@login_required  # type: ignore[untyped-decorator]  # flask_login has no type hints
def index() -> ResponseReturnValue:
    user_id = current_user_id()
    vacancies = db.session.scalars(
        select(Vacancy).where(Vacancy.user_id == int(user_id)).order_by(Vacancy.id)
    ).all()
    return render_template(
        "index.html",
        subscription=billing.subscription(user_id),
        plan=billing.plan(user_id),
        allowances=billing.allowances(user_id),
        capacity=billing.capacity(user_id, "active_vacancies"),
        vacancies=vacancies,
    )


@bp.post("/analyze")
@requires_quota("analysis")  # charged once the view answers below 400
def analyze() -> ResponseReturnValue:
    result = {"score": 87, "summary": "A strong match for the vacancy."}
    allowance = billing.allowance(current_user_id(), "analysis")
    return succeeded("Analysis done.", {"analysis": result, "usage": usage(allowance)})


@bp.post("/export")
@requires_quota("export")
def export() -> ResponseReturnValue:
    allowance = billing.allowance(current_user_id(), "export")
    return succeeded("Export ready.", {"export": {"format": "csv"}, "usage": usage(allowance)})


@bp.post("/vacancies")
@requires_capacity("active_vacancies")  # checked against count_active_vacancies() above
def add_vacancy() -> ResponseReturnValue:
    title = str(request_data().get("title") or "").strip() or "Untitled vacancy"
    if len(title) > TITLE_MAX_LENGTH:
        message = f"A title has at most {TITLE_MAX_LENGTH} characters."
        return failed(400, "INVALID_REQUEST", message)
    vacancy = Vacancy(user_id=int(current_user_id()), title=title, is_active=True)
    db.session.add(vacancy)
    db.session.commit()  # before returning: the guard holds its capacity lock until then
    data = {"vacancy": {"id": vacancy.id, "title": vacancy.title, "is_active": vacancy.is_active}}
    return succeeded(f'Vacancy "{title}" added.', data)


@bp.get("/api/data")
@requires_feature("api_access")
def api_data() -> ResponseReturnValue:
    user_id = current_user_id()
    vacancies = db.session.scalars(select(Vacancy).where(Vacancy.user_id == int(user_id))).all()
    return jsonify(
        success=True,
        data={
            "user": {"id": user_id, "email": current_user.email, "name": current_user.name},
            "plan": billing.plan(user_id).code,
            "usage": {name: usage(a) for name, a in billing.allowances(user_id).items()},
            "vacancies": [
                {"id": v.id, "title": v.title, "is_active": v.is_active} for v in vacancies
            ],
        },
    )
