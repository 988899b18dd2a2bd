"""Logging in and out with Flask-Login; the user loader the extension also relies on."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from .extensions import db, login_manager
from .models import User

bp = Blueprint("auth", __name__)


@login_manager.user_loader  # type: ignore[untyped-decorator]  # flask_login has no type hints
def load_user(user_id: str) -> User | None:
    try:
        return db.session.get(User, int(user_id))
    except ValueError:
        return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("views.index"))
    if request.method == "GET":
        return render_template("login.html", email="")
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None or not user.check_password(password):
        error = "Wrong email or password."
        return render_template("login.html", email=email, error=error), 401
    login_user(user)
    # Always home: following ?next= safely needs checks that would distract from the example.
    return redirect(url_for("views.index"), code=303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"), code=303)
