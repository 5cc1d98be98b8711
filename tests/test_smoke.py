from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User

from ca.models import Certificate, CertificateAuthority


def test_it_issues_a_certificate_with_the_account_subject(
    ca: CertificateAuthority, alice: User, issue_for: Callable[..., Certificate]
) -> None:
    certificate = issue_for(alice)
    assert certificate.subject == "CN=alice,O=Enroll Portal"
