"""Approvers choose on their profile page how they hear of new requests; nobody else sees or sets it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from accounts.models import ApproverMail, Profile
from accounts.services import mark_email_verified

pytestmark = pytest.mark.django_db

PROFILE = reverse("accounts:profile")


@pytest.fixture
def carol(db: None) -> User:
    user = User.objects.create_user("carol", "carol@example.com", "carol-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_enrollmentrequest"))
    mark_email_verified(user)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def choose(client: Client, value: str) -> Any:
    return client.post(PROFILE, {"form": "approver-mail", "approver_mail": value}, follow=True)


def test_an_approver_sees_the_choice_with_the_sites_setting_named(carol: User, settings: Settings) -> None:
    settings.ENROLL_APPROVER_MAIL = "digest"

    page = logged_in(carol).get(PROFILE).content.decode()

    assert "E-mail about new requests" in page
    assert "As the site sets it (now: one e-mail an hour listing the new requests)" in page
    assert "No e-mail about requests" in page


def test_an_approver_saves_a_choice_and_the_page_says_what_it_is_now(carol: User) -> None:
    client = logged_in(carol)

    answer = choose(client, ApproverMail.DIGEST)

    assert answer.redirect_chain == [(PROFILE, 302)]
    assert "Saved. E-mail about new requests: one e-mail an hour listing the new requests." in (
        answer.content.decode()
    )
    assert Profile.objects.get(user=carol).approver_mail == ApproverMail.DIGEST
    choose(client, ApproverMail.SITE)
    assert Profile.objects.get(user=carol).approver_mail == ""


def test_an_approver_without_a_profile_row_can_choose(carol: User) -> None:
    Profile.objects.filter(user=carol).delete()

    choose(logged_in(carol), ApproverMail.NONE)

    assert Profile.objects.get(user=carol).approver_mail == ApproverMail.NONE


def test_a_superuser_is_an_approver(admin_user: User) -> None:
    assert "E-mail about new requests" in logged_in(admin_user).get(PROFILE).content.decode()


def test_an_unknown_choice_is_refused_and_nothing_changes(carol: User) -> None:
    answer = choose(logged_in(carol), "hourly")

    assert answer.status_code == 200
    assert "Select a valid choice" in answer.content.decode()
    assert Profile.objects.get(user=carol).approver_mail == ""


def test_choosing_does_not_touch_the_e_mail_address_form(carol: User) -> None:
    answer = choose(logged_in(carol), "hourly")

    assert "That is not your current password" not in answer.content.decode()
    assert "This field is required" not in answer.content.decode()


def test_people_who_cannot_approve_neither_see_nor_set_it(alice: User) -> None:
    staff = User.objects.create_user("sam", "sam@example.com", "sam-password-123", is_staff=True)
    for user in (alice, staff):
        client = logged_in(user)
        assert "E-mail about new requests" not in client.get(PROFILE).content.decode()
        assert choose(client, ApproverMail.EACH).status_code == 403
        assert not Profile.objects.filter(user=user, approver_mail=ApproverMail.EACH).exists()
