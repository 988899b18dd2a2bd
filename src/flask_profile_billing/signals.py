"""Signals a host app can subscribe to, in a blinker namespace of the extension's own.

Every signal is sent with the Flask app as sender and keyword arguments named in its docstring::

    from flask_profile_billing import signals

    @signals.quota_exceeded.connect
    def notify(app, user_id, metric, allowance, **extra): ...

Billing belongs to accounts and users act: each signal about billing also names the account,
``account_id`` (a user's personal account is ``user:<user id>``). ``user_id`` stays the user: the
personal account's user, or for a charge the user who acted; None for a team account's events
that no user caused.
"""

from blinker import Namespace

_signals = Namespace()

quota_consumed = _signals.signal("quota-consumed")
"""``user_id`` (who acted), ``account_id`` (what was charged), ``metric``, ``amount``,
``allowance`` (after the charge)."""
quota_exceeded = _signals.signal("quota-exceeded")
"""``user_id`` (who acted), ``account_id``, ``metric``, ``amount``, ``allowance`` (what refused
it) and ``scope``: ``"pool"`` when a team's plan limit refused a member's charge, ``"member"``
when the member's own cap did, None for a personal account or a gauge."""
quota_low = _signals.signal("quota-low")
"""``user_id`` (who acted), ``account_id``, ``metric``, ``allowance``: sent by the charge that
takes usage to the threshold, once per account, metric and period (a refund that dips under it
and a second crossing send nothing: the period's ``quota_low`` notification was claimed
already)."""
cap_low = _signals.signal("cap-low")
"""``user_id`` (the member), ``account_id`` (the team), ``metric``, ``allowance`` (the member's
own use and cap, after the charge): sent by the charge that takes a team member's use to
BILLING_QUOTA_LOW_THRESHOLD of the cap the team set for them, once per member, metric and period
(the ``cap_low`` notification, told to that member only). The refusal by the cap is
``quota_exceeded`` with ``scope="member"``."""
seats_full = _signals.signal("seats-full")
"""``user_id`` (None), ``account_id`` (the team), ``seats`` (the plan's seat count), ``members``
and ``invited`` (the pending invitations): an invitation or a new member took the team's last
seat. Sent after the change committed, once per team, seat count and UTC day (the ``seats_full``
notification, told to the team's owners)."""
subscription_changed = _signals.signal("subscription-changed")
"""``user_id``, ``account_id``, ``previous`` (or None for a new account), ``current``."""
subscription_expired = _signals.signal("subscription-expired")
"""``user_id``, ``account_id``, ``subscription`` (the one that lapsed, as stored after ending),
``current`` (the free one that follows), ``in_batch`` (True when a maintenance batch ended it)."""
subscriptions_expired = _signals.signal("subscriptions-expired")
"""``user_ids`` (the users of the batch's personal accounts), ``account_ids`` (its accounts) and
``expired`` (a list of ``(subscription, current)`` pairs): one batch of ``flask billing
maintenance``, sent once per batch. A batch ends its subscriptions in SQL and reads them back as
objects only while a receiver of this signal, of ``subscription_expired`` or of
``notification_due`` is connected for the app (with none, ``expired`` is empty); each pair is also
sent as ``subscription_expired`` with ``in_batch=True`` while that signal has a receiver. A
receiver that writes in bulk uses this one; one per user (an email) can use either."""
profile_viewed = _signals.signal("profile-viewed")
"""``user_id``, ``source``: the profile was read. ``source`` is ``"api"`` for the server's own
``GET /api/profile/me``, ``"page"`` for a render of the profile page and ``"client"`` for the
page's ``profile:view`` event, so a host counting page views can pick one."""
profile_updated = _signals.signal("profile-updated")
"""``user_id``, ``fields`` (the names that changed; empty for the client's event), ``source``
(``"api"``, ``"page"`` for the page's form without JavaScript, or ``"client"``)."""
buy_cta_clicked = _signals.signal("buy-cta-clicked")
"""``user_id``, ``properties``, ``source``: the buy-quota call to action was clicked. ``"page"``
when the page opened its purchase dialog without JavaScript, ``"client"`` for the page's
``profile:cta_buy_quota`` event."""
notification_due = _signals.signal("notification-due")
"""``user_id`` (whom it tells; None for a team account's), ``account_id``, ``kind``
(``expiring``, ``quota_low``, ``quota_blocked``, ``expired``, ``renewal_failed``, ``cap_low``,
``cap_reached`` or ``seats_full``), ``subject`` (the subscription id, the metric or the seat
count), ``period`` (the end of the paid period, the start of the usage period or of the day, an
aware UTC datetime) and ``notification``: sent once per account, kind, subject, period and
recipient, after the transaction that claimed it committed (a charge, a refusal, an expiry, a
seat taken, or a maintenance sweep). A team's notice of its own recipients is sent once, with
``user_id`` None; each of its owners and admins then gets the email, but no signal of their own."""
email_uncertain = _signals.signal("email-uncertain")
"""``user_id``, ``account_id``, ``kind``, ``notification`` and ``resent``: the email of a
notification was taken for sending and its outcome never recorded within
BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS (the run died or stalled mid-batch), so it may or may not
have gone out. ``resent`` is True when BILLING_EMAIL_RESEND_UNCERTAIN sends it again, False when
it stays ``uncertain``. Sent once per notification, by the maintenance run that finds it."""
